#!/usr/bin/perl

# Leaves are never dropped: waiters failed by a lost connection leave
# their queues once Redis is back, all of them, however many more than
# max_pending.

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
webhook_redis 127.0.0.1:%%PORT_REDIS%% max_pending=2;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_ttl   30s;
    webhook_lock_wait  20s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Gate $http_x_gate;
    proxy_set_header X-Lock $webhook_lock_status;

    location /hook {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

sub post {
    my ($uri, $body, @headers) = @_;

    return $h->request_async(POST => $uri, timeout => 40,
                             body => encode_json($body),
                             headers => [ @headers ]);
}

sub until_true {
    my ($cond, $timeout) = @_;

    my $end = time + ($timeout // 5) * $h->slowness;

    while (time < $end) {
        return 1 if $cond->();
        sleep 0.01;
    }

    return $cond->() ? 1 : 0;
}

sub queued { my ($key, $n) = @_; until_true(sub {
    $redis->cmd('LLEN', "$key:q") >= $n }) }

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

ok(until_true(sub {
       @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') } }),
   'the worker listens for its wake-ups');

###############################################################################

# five wait behind eve's lock; their Redis connection is killed: each gets
# webhook_redis_fail at once, and each leave waits for the reconnect, five
# with max_pending=2

my $holder = post('/hook', { from => 'eve' }, 'X-Id' => 'e0',
                  'X-Gate' => 'eve-done');
ok(until_true(sub { $redis->cmd('EXISTS', 'lock:eve') }),
   'eve\'s lock is held in the upstream');

my @waiters;

for my $i (1 .. 5) {
    push @waiters, post('/hook', { from => 'eve' }, 'X-Id' => "e$i");
    ok(queued('lock:eve', $i), "waiter $i in line");
}

ok($redis->cmd('CLIENT', 'KILL', 'TYPE', 'normal') >= 1,
   'the worker\'s Redis connection is killed');

my @res = $h->wait_all(@waiters);
is(join(',', map { $_->{status} } @res), '503,503,503,503,503',
   'every waiter fails closed');
is(join(',', map { error_of($_) } @res), join(',', ('lock_unavailable') x 5),
   'lock_unavailable');

ok(until_true(sub { $redis->cmd('LLEN', 'lock:eve:q') == 0 }, 5),
   'once Redis is back, all five left the queue: none dropped');

$h->write_file('eve-done', '');

my ($held) = $h->wait_all($holder);
is($held->{status}, 200, 'the holder is answered');
ok(until_true(sub { !@{ $redis->cmd('KEYS', 'lock:eve*') } }),
   'and nothing of eve is left');

$h->done;
