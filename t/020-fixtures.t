#!/usr/bin/perl

# Every real webhook body of Chatwoot's test suite that expected.json
# lists goes through nginx: the upstream sees it byte-identical, and the
# inbox, senders, message ids and bypass are what expected.json says.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw/sha256_hex/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream;
my $expected = $h->fixtures_expected;

my $locations = '';

for my $format (qw/whatsapp instagram messenger tiktok twilio telegram line
                    sms/)
{
    $locations .= <<"CONF";
    location /$format/ {
        webhook_lock $format;
        proxy_set_header X-Inbox \$webhook_inbox;
        proxy_set_header X-Senders \$webhook_senders;
        proxy_set_header X-Ids \$webhook_message_ids;
        proxy_set_header X-Lock \$webhook_lock_status;
        proxy_set_header X-Key \$webhook_lock_key;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
CONF
}

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
$locations
}
CONF

for my $file (sort keys %$expected) {
    my $e = $expected->{$file};
    my $form = $file =~ /\.form\.txt$/;
    my $uri = "/$e->{format}/12345678911";
    my $body = $h->fixture($file);

    $up->clear;

    my $res = $h->request(POST => $uri, body => $body,
                          headers => { 'Content-Type' => $form
                                       ? 'application/x-www-form-urlencoded'
                                       : 'application/json' });

    is($res->{status}, 200, "$file: forwarded") or diag $res->{body};

    my ($req) = $up->requests;
    next unless $req;

    my $hd = $req->{headers};

    # Telegram's URI ends with the bot token, which the inbox hashes
    $uri =~ s{([^/]*)$}{'sha256-' . substr(sha256_hex($1), 0, 32)}e
        if $e->{format} eq 'telegram';

    ok($req->{body} eq $body, "$file: body byte-identical");
    is($hd->{'x-inbox'}, $e->{inbox} // $uri, "$file: inbox");
    is($hd->{'x-senders'}, @{ $e->{senders} }
                           ? join(',', @{ $e->{senders} }) : undef,
       "$file: senders");
    is($hd->{'x-ids'}, @{ $e->{message_ids} }
                       ? join(',', @{ $e->{message_ids} }) : undef,
       "$file: message ids");
    is($hd->{'x-lock'}, $e->{bypass} ? 'bypass' : 'acquired',
       "$file: " . ($e->{bypass} ? 'bypass' : 'locked'));

    next if $e->{bypass};

    my $inbox = $e->{inbox} // $uri;
    is($hd->{'x-key'}, join(',', map { "webhook:{$inbox}:$_" }
                                 @{ $e->{senders} }),
       "$file: lock key");
}

is_deeply($redis->settled_keys, [], 'every lock released');

$h->done;
