#!/usr/bin/perl

# Redis out of memory (maxmemory reached, noeviction) refuses what would
# write new data, but a release must still go through: the lock is given
# back, with or without waiting, with or without dedup marks, and the
# next request of that sender is not held by it.

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
my $dir = $h->testdir;

# a request with "X-Gate: NAME" stays in the upstream until the file NAME
# exists (at most a minute)

my $up = $h->upstream(handler => sub {
    my ($req) = @_;

    my $gate = $req->{headers}{'x-gate'} or return;
    my $end = time + 60;

    sleep 0.02 until -e "$dir/$gate" || time > $end;

    return;
});

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock        json;
    webhook_sender      from;
    webhook_lock_key    lock:$webhook_sender;
    webhook_lock_ttl    30s;
    webhook_message_id  id;
    webhook_dedup       1h;

    proxy_set_header X-Gate $http_x_gate;

    location /wait {
        webhook_lock_wait 1s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /nowait {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wait-plain {
        webhook_lock_wait 1s;
        webhook_dedup     off;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

sub until_true {
    my ($cond, $timeout) = @_;

    my $end = time + ($timeout // 5) * $h->slowness;

    while (time < $end) {
        return 1 if $cond->();
        sleep 0.01;
    }

    return $cond->() ? 1 : 0;
}

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

ok(until_true(sub {
       @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') } }),
   'the worker listens for its wake-ups');

is($redis->cmd('CONFIG', 'SET', 'maxmemory-policy', 'noeviction'), 'OK',
   'noeviction');

for my $uri (qw(/wait /nowait /wait-plain)) {
    (my $from = $uri) =~ s{/}{}g;
    my $gate = "$from-done";

    my $held = $h->request_async(POST => $uri, timeout => 20,
                                 body => encode_json({ from => $from,
                                                       id => "$from-1" }),
                                 headers => [ 'X-Gate' => $gate ]);

    ok(until_true(sub { $redis->cmd('EXISTS', "lock:$from") }),
       "$uri: the lock is held in the upstream");

    # the smallest maxmemory: Redis is out of memory at once

    is($redis->cmd('CONFIG', 'SET', 'maxmemory', 1), 'OK', "$uri: maxmemory");
    like($redis->cmd('SET', 'probe', 'x')->{err} // '', qr/^OOM/,
         "$uri: Redis refuses writes");

    $h->write_file($gate, '');

    my ($res) = $h->wait_all($held);
    is($res->{status}, 200, "$uri: the holder is answered");

    ok(until_true(sub { !$redis->cmd('EXISTS', "lock:$from") }),
       "$uri: its release frees the lock all the same");

    if ($uri ne '/wait-plain') {
        is($redis->cmd('GET', "webhook:dedup:{$uri}:$from-1"), 'done',
           "$uri: and its message is marked done");
    }

    is($redis->cmd('CONFIG', 'SET', 'maxmemory', 0), 'OK',
       "$uri: memory again");

    my $r = $h->request(POST => $uri, timeout => 10,
                        body => encode_json({ from => $from,
                                              id => "$from-2" }));
    is($r->{status}, 200, "$uri: the next request of the sender goes");
    isnt(error_of($r), 'sender_busy', "$uri: not sender_busy");
}

$h->done;
