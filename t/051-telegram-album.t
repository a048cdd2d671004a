#!/usr/bin/perl

# A Telegram album: each photo is its own update, sharing one
# media_group_id, and Telegram delivers them at once.  Straight to the
# race-prone Chatwoot stand-in, every update finds no conversation and
# makes one (a barrier holds each at "find" until all six got there).
# Through the gate, waiting at the edge, the first update is held in the
# app until the five others are known to wait: one conversation, six
# messages, one at a time.  No timing luck in either order.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Chatwoot;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;

my $n = 6;
my $dir = $h->testdir;
my $release = "$dir/release";

mkdir "$dir/$_" or die "mkdir $dir/$_: $!" for qw/direct gated/;

my $direct = Chatwoot->start(port => $h->port('direct'), dir => "$dir/direct",
                             window => 0, barrier => $n);
my $gated = Chatwoot->start(port => $h->port('gated'), dir => "$dir/gated",
                            window => 0.05, hold => $release);

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format album '$webhook_lock_status $webhook_message_id';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /webhooks/telegram/ {
        webhook_lock        telegram;
        webhook_lock_wait   30s;
        webhook_lock_ttl    60s;

        access_log %%TESTDIR%%/album.log album;

        proxy_read_timeout 60s;
        proxy_pass http://127.0.0.1:%%PORT_GATED%%;
    }

    location /direct/ {
        proxy_read_timeout 60s;
        proxy_pass http://127.0.0.1:%%PORT_DIRECT%%;
    }

    location = /status { webhook_status; }
}
CONF

# the album, from Chatwoot's photo update: one update per photo

my $photo = decode_json($h->fixture('telegram-photo.json'));
my @album;

for my $i (1 .. $n) {
    my %u = %$photo;
    my %m = %{ $photo->{message} };

    $u{update_id} = $photo->{update_id} + $i;
    $m{message_id} = $i;
    $m{media_group_id} = '13602373436587690';
    $m{photo} = [ { %{ $photo->{message}{photo}[0] },
                    file_unique_id => "AQADL60xG8Kh4FZ$i" } ];
    $u{message} = \%m;

    push @album, encode_json(\%u);
}

sub push_album {
    my ($uri) = @_;

    my @hd = map {
        $h->request_async(POST => $uri, body => $_, timeout => 60,
                          headers => { 'Content-Type' => 'application/json' })
    } @album;

    return $h->wait_all(@hd);
}

sub waiting {
    my $res = $h->request(GET => '/status?format=json');
    return (eval { decode_json($res->{body}) } // {})
           ->{webhook_lock_requests_waiting} // -1;
}

###############################################################################

# straight to the app

my @res = push_album('/direct/bot123:token');

is(scalar(grep { ($_->{status} // 0) == 200 } @res), $n,
   'without the gate: every update answered 200');
is($direct->conversations->{23}, $n,
   "without the gate: $n conversations for one contact");

# through the gate: the first update held in the app until the others wait

my $token = '123456789:AAE-album-token';
my @hd = map {
    $h->request_async(POST => "/webhooks/telegram/$token", body => $_,
                      timeout => 60,
                      headers => { 'Content-Type' => 'application/json' })
} @album;

my $deadline = time + 30;
sleep 0.02 while ($gated->arrivals < 1 || waiting() < $n - 1)
                 && time < $deadline;

is($gated->arrivals, 1, 'through the gate: one update held in the app');
is(waiting(), $n - 1, 'five updates wait at the edge');
is(scalar @{ $gated->messages }, 0, 'and none is processed yet');

open my $fh, '>', $release or die "$release: $!";
close $fh;

@res = $h->wait_all(@hd);

is(scalar(grep { ($_->{status} // 0) == 200 } @res), $n,
   'through the gate: every update answered 200');
is_deeply($gated->conversations, { 23 => 1 },
          'through the gate: one conversation');

is($gated->arrivals, $n, 'each went into the app');

my $msgs = $gated->messages;
is_deeply([ sort map { $_->{id} } @$msgs ],
          [ map { $photo->{update_id} + $_ } 1 .. $n ],
          'every photo processed once');

my $overlap = grep { $msgs->[$_]{start} < $msgs->[$_ - 1]{end} }
              1 .. $#$msgs;
is($overlap, 0, 'never two updates of the contact in the app at once');

# nginx logs a request once it has answered it

my @lines;
$deadline = time + 10;

while (1) {
    @lines = split /\n/, ($h->read_file('album.log') // '');
    last if @lines >= $n || time > $deadline;
    sleep 0.02;
}

my %status;
$status{ (split / /)[0] }++ for @lines;
is_deeply(\%status, { acquired => 1, waited => $n - 1 },
          'one acquired at once, five after waiting');

is_deeply($redis->settled_keys, [], 'every lock released');

$direct->stop;
$gated->stop;

$h->done;
