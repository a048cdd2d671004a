#!/usr/bin/perl

# Directive parsing: every wrong value fails "nginx -t" with the file and
# line, and good configurations pass.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use NgxHarness;

my $h = NgxHarness->new();

my $redis = 'webhook_redis 127.0.0.1:%%PORT_REDIS%%;';

sub location {
    my ($directives, %opts) = @_;

    return ($opts{http} // $redis) . <<"CONF";
server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    location /hook {
        $directives
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF
}

$h->config_ok(location('webhook_lock whatsapp;'), 'whatsapp accepted');

$h->config_ok(location(<<'CONF'), 'every directive accepted');
webhook_lock json;
webhook_sender [*].message.from event.sender.id;
webhook_message_id [*].message.id;
webhook_inbox account.id;
webhook_lock_key lock:$webhook_inbox:$webhook_sender;
webhook_lock_ttl 10s;
webhook_lock_hold 2s;
webhook_lock_wait 10s;
webhook_lock_queue 20;
webhook_retry_after 3;
webhook_redis_fail open;
webhook_lock_log_level notice;
CONF

$h->config_ok(location('webhook_lock twilio; webhook_sender From;',
                       http => 'webhook_redis unix:/tmp/redis.sock '
                             . 'password=x db=3 connect_timeout=1s '
                             . 'timeout=500ms max_pending=100;'),
              'unix socket and every webhook_redis parameter accepted');

$h->config_ok(location('webhook_lock off;', http => ''),
              'no webhook_redis needed while no location locks');

$h->config_fails(location('webhook_lock xml;'),
                 qr/invalid value "xml" in .*\.conf:\d+/,
                 'unknown format, with file and line');

$h->config_fails(location('webhook_lock json;'),
                 qr/"webhook_lock json" needs "webhook_sender"/,
                 'json without a sender path');

$h->config_fails(location('webhook_lock whatsapp;', http => ''),
                 qr/needs a "webhook_redis"/,
                 'a lock without webhook_redis');

$h->config_fails(location('webhook_lock whatsapp; webhook_lock instagram;'),
                 qr/"webhook_lock" directive is duplicate/,
                 'webhook_lock twice');

for my $path ('a..b', 'a.', '.a', 'a[', 'a[x]', 'a[1', 'a]', '', 'a[*]b') {
    $h->config_fails(location("webhook_lock json; webhook_sender '$path';"),
                     qr/path.*\.conf:\d+/i,
                     "bad path '$path' rejected with file and line");
}

$h->config_fails(location('webhook_lock twilio; webhook_sender a.b;'),
                 qr/"a\.b" is not a form field name.*\.conf:\d+/,
                 'twilio paths must be field names');

$h->config_fails(location('webhook_lock json; webhook_sender a; '
                          . 'webhook_sender b;'),
                 qr/"webhook_sender" directive is duplicate/,
                 'webhook_sender twice');

$h->config_fails(location('webhook_lock whatsapp; webhook_lock_ttl 0;'),
                 qr/webhook_lock_ttl/, 'zero ttl');

$h->config_fails(location('webhook_lock whatsapp; webhook_lock_ttl 2s; '
                          . 'webhook_lock_hold 2s;'),
                 qr/"webhook_lock_hold" must be shorter/, 'hold >= ttl');

$h->config_fails(location('webhook_lock whatsapp; webhook_lock_ttl abc;'),
                 qr/invalid value/, 'ttl not a time');

$h->config_fails(location('webhook_lock whatsapp; webhook_lock_wait 5x;'),
                 qr/"webhook_lock_wait" directive invalid value/,
                 'wait not a time');

for my $n (0, 1001, 'x') {
    $h->config_fails(location("webhook_lock whatsapp; webhook_lock_queue $n;"),
                     qr/"webhook_lock_queue" directive invalid number|must be between 1 and 1000/,
                     "queue of $n rejected");
}

$h->config_ok(location('webhook_lock whatsapp; webhook_lock_wait 0; '
                       . 'webhook_lock_queue 1000;'),
              'wait 0 and the largest queue accepted');

$h->config_fails(location('webhook_lock whatsapp; webhook_retry_after x;'),
                 qr/invalid value/, 'retry_after not a number');

$h->config_fails(location('webhook_lock whatsapp; webhook_redis_fail maybe;'),
                 qr/invalid value "maybe"/, 'unknown fail policy');

$h->config_fails(location('webhook_lock whatsapp; '
                          . 'webhook_lock_log_level debug;'),
                 qr/invalid value "debug"/, 'unknown log level');

$h->config_fails(location('webhook_lock whatsapp; '
                          . 'webhook_lock_key $no_such_variable;'),
                 qr/unknown "no_such_variable" variable/,
                 'key with an unknown variable');

$h->config_fails(location('webhook_lock whatsapp;',
                          http => 'webhook_redis 127.0.0.1;'),
                 qr/no port in "127\.0\.0\.1"/, 'redis without a port');

$h->config_fails(location('webhook_lock whatsapp;',
                          http => 'webhook_redis 127.0.0.1:6379 db=x;'),
                 qr/invalid parameter "db=x"/, 'bad db');

$h->config_fails(location('webhook_lock whatsapp;',
                          http => 'webhook_redis 127.0.0.1:6379 '
                                . 'timeout=0;'),
                 qr/invalid parameter "timeout=0"/, 'zero timeout');

my $secret = location('webhook_lock whatsapp;',
                      http => 'webhook_redis 127.0.0.1:6379 '
                            . 'password=hunter2 bogus=1;');
$h->config_fails($secret, qr/invalid parameter "bogus=1"/,
                 'unknown parameter');
$h->config_fails($secret, qr/^(?!.*hunter2)/s,
                 'the password is not echoed by nginx -t');

$h->config_fails(location('webhook_lock whatsapp;',
                          http => 'webhook_redis 127.0.0.1:6379 '
                                . 'password=;'),
                 qr/invalid parameter "password="/, 'empty password');

$h->config_fails(location('webhook_lock whatsapp;',
                          http => "$redis $redis"),
                 qr/"webhook_redis" directive is duplicate/,
                 'webhook_redis twice');

$h->config_fails(<<'CONF', qr/"webhook_redis" directive is not allowed here/,
server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    webhook_redis 127.0.0.1:6379;
}
CONF
                 'webhook_redis outside http');

# webhook_dedup

$h->config_ok(location('webhook_lock json; webhook_sender from; '
                       . 'webhook_dedup 24h;'), 'webhook_dedup 24h accepted');

$h->config_ok(location('webhook_lock json; webhook_sender from; '
                       . 'webhook_dedup off;'), 'webhook_dedup off accepted');

$h->config_fails(location('webhook_lock json; webhook_sender from; '
                          . 'webhook_dedup 0;'),
                 qr/invalid value "0" in .*\.conf:\d+/,
                 'webhook_dedup 0 refused, with file and line');

$h->config_fails(location('webhook_lock json; webhook_sender from; '
                          . 'webhook_dedup forever;'),
                 qr/invalid value "forever"/,
                 'webhook_dedup without a time refused');

$h->config_fails(location('webhook_lock json; webhook_sender from; '
                          . 'webhook_dedup 1h; webhook_dedup off;'),
                 qr/"webhook_dedup" directive is duplicate/,
                 'webhook_dedup twice');

$h->done;
