#!/usr/bin/perl

# nginx -s reload and quit with requests in flight: they finish, their
# locks are released, and the old workers exit within a few seconds (the
# Redis connection and its timers do not hold them).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream(delay => 1);

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock json;
        webhook_sender from;
        webhook_lock_ttl 30s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

$h->start($conf);

sub post_async {
    return $h->request_async(POST => "/hook?hold=$_[1]", timeout => 20,
                             body => encode_json({ from => $_[0] }));
}

# The requests are held in the upstream until the old workers shut down
# (each logs so), then take the upstream's second: in flight through the
# reload or the quit, whatever the speed of the machine.  The log, not the
# process title, which valgrind hides.
sub release_on_shutdown {
    my ($hold) = @_;

    my @workers = $h->worker_pids;
    my $mark = $h->log_mark;

    $h->run_daemon(sub {
        $h->wait_for(sub {
            my $log = $h->error_log($mark);
            grep { $log =~ /\b$_#\d+: gracefully shutting down/
                   || !-e "/proc/$_" } @workers;
        }, interval => 0.01);
        $up->release($hold);
    });
}

# reload

$up->clear;
my @inflight = map { post_async("r$_", 'reload') } 1 .. 3;
$up->wait_arrived(3);
is(scalar @{ $redis->cmd('KEYS', '*') }, 3, 'three locks held');

release_on_shutdown('reload');

my @old = $h->worker_pids;
my $t = time;
ok($h->reload(undef, timeout => 5), 'reload finished, old workers gone');
my $took = time - $t;
ok($took < 4 * $h->slowness,
   sprintf('old workers exited in %.1f s', $took));
isnt(join(',', $h->worker_pids), join(',', @old), 'new workers run');

my @r = $h->wait_all(@inflight);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'requests in flight during the reload finished');
is_deeply($redis->settled_keys, [], 'their locks were released');

my $r = $h->request(POST => '/hook', body => encode_json({ from => 'r1' }),
                    timeout => 5);
is($r->{status}, 200, 'the new workers lock');

# quit

$up->clear;
@inflight = map { post_async("q$_", 'quit') } 1 .. 2;
$up->wait_arrived(2);
release_on_shutdown('quit');

$t = time;
ok($h->stop(timeout => 5), 'quit finished without TERM');
ok(time - $t < 4 * $h->slowness, 'promptly');

@r = $h->wait_all(@inflight);
is(join(',', map { $_->{status} } @r), '200,200',
   'requests in flight during quit finished');
is_deeply($redis->settled_keys, [], 'their locks were released');

$h->done;
