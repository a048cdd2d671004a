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
    return $h->request_async(POST => '/hook', timeout => 10,
                             body => encode_json({ from => $_[0] }));
}

# reload

my @inflight = map { post_async("r$_") } 1 .. 3;
sleep 0.4;
is(scalar @{ $redis->cmd('KEYS', '*') }, 3, 'three locks held');

my @old = $h->worker_pids;
my $t = time;
ok($h->reload(undef, timeout => 5), 'reload finished, old workers gone');
my $took = time - $t;
ok($took < 4, sprintf('old workers exited in %.1f s', $took));
isnt(join(',', $h->worker_pids), join(',', @old), 'new workers run');

my @r = $h->wait_all(@inflight);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'requests in flight during the reload finished');
is_deeply($redis->settled_keys, [], 'their locks were released');

my $r = $h->request(POST => '/hook', body => encode_json({ from => 'r1' }),
                    timeout => 5);
is($r->{status}, 200, 'the new workers lock');

# quit

@inflight = map { post_async("q$_") } 1 .. 2;
sleep 0.4;

$t = time;
ok($h->stop(timeout => 5), 'quit finished without TERM');
ok(time - $t < 4, 'promptly');

@r = $h->wait_all(@inflight);
is(join(',', map { $_->{status} } @r), '200,200',
   'requests in flight during quit finished');
is_deeply($redis->settled_keys, [], 'their locks were released');

$h->done;
