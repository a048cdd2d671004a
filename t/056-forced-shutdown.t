#!/usr/bin/perl

# worker_shutdown_timeout with Redis commands in flight: an acquire and a
# wait whose replies never came when the old worker is forced to close
# everything.  The requests are closed after the Redis connection; the
# lock handles must already be detached then (ASan shows a use after free
# otherwise: ./build.sh asan t/056-forced-shutdown.t).

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

# the worker's first connect may time out on a slow machine: retried

for my $loc (qw/hook wait/) {
    my $r;

    for (1 .. 100) {
        $r = $h->request(POST => "/$loc", body => encode_json({ from => 'x' }),
                         timeout => 5 * $h->slowness);
        last if ($r->{status} // 0) == 200;
        sleep 0.05;
    }

    is($r->{status}, 200, "/$loc locks while Redis answers");
}

is_deeply($redis->settled_keys(2 * $h->slowness), [], 'released');

# Redis stops answering: the command stays in flight, and the old worker
# is forced out with it; one round for each path

for my $case ([ hook => 'SET', 'the acquire' ],
              [ wait => 'EVALSHA', 'the wait' ])
{
    my ($loc, $cmd, $name) = @$case;

    for (1 .. 500) {
        my $r = $h->request(POST => "/$loc", timeout => 5 * $h->slowness,
                            body => encode_json({ from => 'warm' }));
        last if ($r->{status} // 0) == 200;
        sleep 0.02;
    }

    my $pause = 4000 * $h->slowness;
    is($redis->cmd('CLIENT', 'PAUSE', $pause), 'OK', "$name: Redis paused");
    my $until = time + $pause / 1000;

    my $mark = $h->log_mark;

    my $inflight = $h->request_async(POST => "/$loc",
                                     timeout => 20 * $h->slowness,
                                     body => encode_json({ from => "s-$loc" }));

    $h->error_log_like(qr/webhook redis $cmd keys:1 /, "$name is in flight",
                       since => $mark, timeout => 3 * $h->slowness);

    my $t = time;

    ok($h->reload(undef, timeout => 10, ready => 0),
       "$name: the old worker is gone");
    ok(time < $until, sprintf("$name: forced out after "
                              . "worker_shutdown_timeout (%.1f s), before "
                              . "Redis answered", time - $t));

    my ($r) = $h->wait_all($inflight);
    ok(!defined $r->{status} || $r->{status} != 200,
       "$name got no lock from a worker that was shut down");

    $h->no_error_log(qr/exited on signal/, "$name: no worker crashed",
                     since => $mark);

    # the pause ends by itself (CLIENT UNPAUSE would wait for it too)
    sleep 0.05 while time < $until + 0.1;
}

$h->done;
