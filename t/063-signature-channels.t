#!/usr/bin/perl

# Signatures of the telegram and line formats: a right one passes the body
# untouched; a wrong, missing or malformed one, or one made with another
# secret, is a 401 with nothing sent upstream or to Redis; rotation with
# two secrets; a LINE body spooled to a temp file; no secret in the
# module's log lines.
# The sms format has no scheme of its own (Bandwidth uses basic auth):
# webhook_signature there fails nginx -t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw/hmac_sha256_hex/;
use NgxHarness;
use Provider;

my $h = NgxHarness->new(needs => [qw/proxy redis debug/]);
my $redis = $h->redis;
my $up = $h->upstream;

my %secret = (
    line => 'line-channel-secret-Tg48w',
    tg   => 'tg-secret_token-Ab12Cd34',
    old  => 'rot-old-tg-secret-Pq55z',
    new  => 'rot-new-tg-secret-Rs66y',
    lold => 'rot-old-line-secret-Mn77x',
    lnew => 'rot-new-line-secret-Kl88v',
);

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format inbox '\$status \$webhook_lock_status \$webhook_inbox';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_body_buffer_size 8k;

    webhook_lock_key sig:\$request_id:\$webhook_sender;
    proxy_set_header X-Lock \$webhook_lock_status;

    location /line {
        webhook_lock line;
        webhook_signature $secret{line};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /line-rotate {
        webhook_lock line;
        webhook_signature $secret{lold} $secret{lnew};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /telegram/ {
        webhook_lock telegram;
        webhook_signature $secret{tg};
        access_log %%TESTDIR%%/telegram.log inbox;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /telegram-rotate/ {
        webhook_lock telegram;
        webhook_signature $secret{old} $secret{new};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

my $DENIED = '{"error":"invalid_signature"}';

my $line = $h->fixture('line-text.json');
my $tg = $h->fixture('telegram-text.json');

sub line_sig { Provider::line_signature(@_) }

sub post {
    my ($uri, $body, @headers) = @_;

    $up->clear;
    return $h->request(POST => $uri, body => $body,
                       headers => [ 'Content-Type' => 'application/json',
                                    @headers ]);
}

sub passes {
    my ($uri, $body, $headers, $name) = @_;

    my $res = post($uri, $body, @$headers);
    my ($req) = $up->requests;

    is($res->{status}, 200, "$name: 200") or diag $res->{body};
    ok($req && $req->{body} eq $body, "$name: body forwarded untouched");
    is($req && $req->{headers}{'x-lock'}, 'acquired', "$name: locked");
}

sub denied {
    my ($uri, $body, $headers, $name) = @_;

    # the locks of the requests before are released after their response
    $redis->settled_keys(5);

    my $res = post($uri, $body, @$headers);

    is($res->{status}, 401, "$name: 401");
    is($res->{body}, $DENIED, "$name: body");
    is(scalar $up->requests, 0, "$name: not forwarded");
    is_deeply($redis->cmd('KEYS', '*'), [], "$name: no lock taken");
}

###############################################################################

# line: X-Line-Signature, base64 of HMAC-SHA256 over the raw body

passes('/line', $line, [ 'X-Line-Signature' => line_sig($line,
                                                        $secret{line}) ],
       'line signed');

denied('/line', $line, [ 'X-Line-Signature' => line_sig($line, 'other') ],
       'line signed with another secret');
denied('/line', $line, [], 'line without a signature');
denied('/line', $line . ' ', [ 'X-Line-Signature' =>
                                   line_sig($line, $secret{line}) ],
       'line body changed after signing');
denied('/line', $line, [ 'X-Line-Signature' =>
                             hmac_sha256_hex($line, $secret{line}) ],
       'line signature in hex');
denied('/line', $line, [ 'X-Line-Signature' =>
                             substr(line_sig($line, $secret{line}), 0, -1) ],
       'line signature cut short');

passes('/line-rotate', $line, [ 'X-Line-Signature' =>
                                    line_sig($line, $secret{lnew}) ],
       'line rotation: the second secret');
passes('/line-rotate', $line, [ 'X-Line-Signature' =>
                                    line_sig($line, $secret{lold}) ],
       'line rotation: the first secret');
denied('/line-rotate', $line, [ 'X-Line-Signature' =>
                                    line_sig($line, $secret{line}) ],
       'line rotation: neither secret');

# a body beyond client_body_buffer_size, in a temp file

(my $big = $line) =~ s/Hello, world/'x' x 20000/e;

passes('/line', $big, [ 'X-Line-Signature' => line_sig($big,
                                                       $secret{line}) ],
       'line body in a temp file');
denied('/line', $big, [ 'X-Line-Signature' => line_sig($line,
                                                      $secret{line}) ],
       'line body in a temp file, signature of another body');

# telegram: X-Telegram-Bot-Api-Secret-Token equal to the secret

my $tg_uri = '/telegram/123456789:AAE-bot-token';
my $H = 'X-Telegram-Bot-Api-Secret-Token';

passes($tg_uri, $tg, [ $H => $secret{tg} ], 'telegram secret token');

denied($tg_uri, $tg, [ $H => 'another-secret' ], 'telegram wrong token');
denied($tg_uri, $tg, [], 'telegram without the token');
denied($tg_uri, $tg, [ $H => '' ], 'telegram empty token');
denied($tg_uri, $tg, [ $H => substr($secret{tg}, 0, -1) ],
       'telegram token cut short');
denied($tg_uri, $tg, [ $H => "$secret{tg}x" ], 'telegram token too long');
denied($tg_uri, $tg, [ $H => uc $secret{tg} ], 'telegram token in upper case');

# a refused request is logged by the token's hash too

my @lines = grep { /^401 / } split /\n/, $h->read_file('telegram.log');
ok(scalar @lines, 'telegram: the 401s are logged');
is(scalar(grep { !m{ unsigned /telegram/sha256-[0-9a-f]{32}$} } @lines), 0,
   'telegram: each with the hashed inbox, not the token');

passes('/telegram-rotate/t', $tg, [ $H => $secret{new} ],
       'telegram rotation: the second secret');
passes('/telegram-rotate/t', $tg, [ $H => $secret{old} ],
       'telegram rotation: the first secret');
denied('/telegram-rotate/t', $tg, [ $H => $secret{tg} ],
       'telegram rotation: neither secret');

# nginx's own debug lines show the request headers, Telegram's secret
# token among them; the module's lines never show a secret

my @log = grep { /webhook/ } split /\n/, $h->error_log;

ok(scalar(grep { /webhook signature mismatch: "X-Telegram-Bot-Api-Secret-/ }
          @log), 'the mismatches are logged');

for my $name (sort keys %secret) {
    is(scalar(grep { index($_, $secret{$name}) >= 0 } @log), 0,
       "$name secret in no webhook log line");
}

is_deeply($redis->settled_keys, [], 'every lock released');

###############################################################################

# sms: Bandwidth authenticates with basic auth, not a signature

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%%;
server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    %%HERE%%
}
CONF

sub conf {
    my ($text) = @_;
    (my $c = $conf) =~ s/%%HERE%%/$text/;
    return $c;
}

$h->config_fails(conf('location /s { webhook_lock sms; '
                      . 'webhook_signature s3cr3t-sms; }'),
                 qr/"webhook_lock sms" has no signature scheme.*auth_basic/,
                 'sms with webhook_signature is refused');

$h->config_fails(conf('webhook_signature inherited-secret; '
                      . 'location /s { webhook_lock sms; }'),
                 qr/"webhook_lock sms" has no signature scheme.*\.conf:\d+/,
                 'sms with an inherited signature is refused');

$h->config_ok(conf('webhook_signature inherited-secret; '
                   . 'location /s { webhook_lock sms; '
                   . 'webhook_signature off; auth_basic "bandwidth"; '
                   . 'auth_basic_user_file htpasswd; }'),
              'sms with "webhook_signature off" and auth_basic');

$h->done;
