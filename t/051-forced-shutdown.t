#!/usr/bin/perl

# worker_shutdown_timeout with Redis commands in flight: an acquire and a
# wait whose replies never came when the old worker is forced to close
# everything.  The requests are closed after the Redis connection; the
# lock handles must already be detached then (ASan shows a use after free
# otherwise: ./build.sh asan t/051-forced-shutdown.t).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis debug/]);
my $redis = $h->redis;
my $up = $h->upstream;

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%% timeout=30s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock json;
        webhook_sender from;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wait {
        webhook_lock json;
        webhook_sender from;
        webhook_lock_wait 20s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

$h->start($conf, main => 'worker_shutdown_timeout 1s;');

for my $loc (qw/hook wait/) {
    my $r = $h->request(POST => "/$loc", body => encode_json({ from => 'x' }),
                        timeout => 5 * $h->slowness);
    is($r->{status}, 200, "/$loc locks while Redis answers");
}

is_deeply($redis->settled_keys(2 * $h->slowness), [], 'released');

# Redis stops answering: both commands stay in flight

is($redis->cmd('CLIENT', 'PAUSE', 15000 * $h->slowness), 'OK', 'paused');

my $mark = $h->log_mark;

my @inflight = map {
    $h->request_async(POST => "/$_", timeout => 20 * $h->slowness,
                      body => encode_json({ from => "s-$_" }))
} qw/hook wait/;

$h->error_log_like(qr/webhook redis SET keys:1 /, 'the acquire is in flight',
                   since => $mark, timeout => 5 * $h->slowness);
$h->error_log_like(qr/webhook redis EVALSHA keys:1 /, 'and the wait',
                   since => $mark, timeout => 5 * $h->slowness);

my @old = $h->worker_pids;
my $t = time;

ok($h->reload(undef, timeout => 10), 'reload: the old worker is gone');
ok(time - $t < 5 * $h->slowness,
   sprintf('forced out after worker_shutdown_timeout (%.1f s)', time - $t));

my @r = $h->wait_all(@inflight);
ok(!defined $r[0]{status} || $r[0]{status} != 200,
   'the acquire got no lock from a worker that was shut down');
ok(!defined $r[1]{status} || $r[1]{status} != 200,
   'nor did the wait');

$h->no_error_log(qr/exited on signal/, 'no worker crashed', since => $mark);

$h->done;
