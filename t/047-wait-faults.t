#!/usr/bin/perl

# Waiting requests when things go wrong: Redis restarted (they follow
# webhook_redis_fail at once, nothing hangs past the wait), the subscriber
# connection killed (the slow poll and the resubscription carry them),
# nginx -s reload and quit (each gets an answer; the old worker stays no
# longer than its waits and requests need).

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
my $up = $h->upstream;

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%% timeout=300ms;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_wait  5s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Lock $webhook_lock_status;

    location /closed {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /open {
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /short {
        webhook_lock_wait 1s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

$h->start($conf);

sub post {
    my ($uri, $id, $from, %opts) = @_;

    return $h->request_async(POST => $uri, timeout => 15,
                             body => encode_json({ from => $from }),
                             headers => [ 'X-Id' => $id ], %opts);
}

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

sub wait_queued {
    my ($key, $n) = @_;

    for (1 .. 200) {
        return 1 if $redis->cmd('LLEN', "$key:q") >= $n;
        sleep 0.01;
    }

    return 0;
}

sub locked_again {
    for (1 .. 60) {
        my $r = $h->request(POST => '/closed', timeout => 5,
                            body => encode_json({ from => 'probe' }));
        return 1 if $r->{status} == 200;
        sleep 0.1;
    }

    return 0;
}

sub ids { join ',', map { $_->{headers}{'x-id'} } $up->requests }

# the worker's subscriber is listening again (after its backoff)
sub subscribed {
    for (1 .. 300) {
        return 1 if @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') };
        sleep 0.01;
    }

    return 0;
}

###############################################################################

# Redis goes away while requests wait: each follows its location's policy
# at once

my @closed = (post('/closed?delay=1', 'a', 'ann'),
              map { sleep 0.05; post('/closed', "c$_", 'ann') } 1 .. 2);
my @open = (post('/open?delay=1', 'b', 'ben'),
            map { sleep 0.05; post('/open', "o$_", 'ben') } 1 .. 2);

ok(wait_queued('lock:ann', 2) && wait_queued('lock:ben', 2),
   'four requests waiting');

my $t = time;
$redis->kill;

my @r = $h->wait_all(@closed[1, 2]);
my $took = time - $t;

is(join(',', map { $_->{status} } @r), '503,503',
   'Redis gone, fail closed: the waiters get 503');
is(join(',', map { error_of($_) } @r), 'lock_unavailable,lock_unavailable',
   'lock_unavailable');
ok($took < 0.5, sprintf('at once (%.3f s), not at the end of the wait',
                        $took));

@r = $h->wait_all(@open[1, 2]);
is(join(',', map { $_->{status} } @r), '200,200',
   'fail open: the waiters are forwarded');
my %lock = map { $_->{headers}{'x-id'} => $_->{headers}{'x-lock'} }
           $up->requests;
is("$lock{o1},$lock{o2}", 'open,open', 'unlocked ($webhook_lock_status)');

@r = $h->wait_all($closed[0], $open[0]);
is(join(',', map { $_->{status} } @r), '200,200',
   'the holders, already in the upstream, finish');

$h->error_log_like(qr/redis \S+ subscriber is unreachable/,
                   'the subscriber\'s loss is logged');

$redis->start;
ok(locked_again(), 'locking resumed once Redis is back');
$h->error_log_like(qr/\[notice\].*redis \S+ subscriber is back/,
                   'the subscriber came back too');

# waiting again works after the restart

$up->clear;

my @w = (post('/closed?delay=0.3', 'a', 'cid'),
         map { sleep 0.05; post('/closed', $_, 'cid') } qw/b c/);
@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'after the restart, waiting works');
is(ids(), 'a,b,c', 'in order');

###############################################################################

# the subscriber connection killed again and again while requests wait:
# they still get their turn, in order, within their wait

$up->clear;

@w = (post('/closed?delay=1', 'a', 'dan'),
      map { sleep 0.05; post('/closed', $_, 'dan') } qw/b c/);
wait_queued('lock:dan', 2);

my $kills = 0;
my $until = time + 1.5;

while (time < $until) {
    $kills += $redis->cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
    sleep 0.02;
}

ok($kills >= 2, "subscriber killed $kills times");

@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'without wake-ups: all three forwarded');
is(ids(), 'a,b,c', 'in order');
is(NgxHarness::max_concurrency([ $up->requests ]), 1, 'one at a time');

###############################################################################

# reload with requests waiting: they keep their places, requests to the
# new worker queue behind them, and the old worker goes when they are done

ok(subscribed(), 'the subscriber is back');
$up->clear;

@w = (post('/closed?delay=0.3', 'a', 'eve'),
      map { sleep 0.05; post('/closed?delay=0.3', $_, 'eve') } qw/b c d/);
ok(wait_queued('lock:eve', 3), 'three waiting in the old worker');

my @old = $h->worker_pids;
$t = time;
ok($h->reload(undef, wait_old => 0), 'reloaded');

push @w, post('/closed?delay=0.3', 'e', 'eve');

my $gone;
for (1 .. 500) {
    my %now = map { $_ => 1 } $h->worker_pids;
    $gone = time - $t, last unless grep { $now{$_} } @old;
    sleep 0.01;
}

@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200,200,200',
   'every waiter answered, through the reload');
is(ids(), 'a,b,c,d,e', 'in order, the new worker\'s request last');
ok(defined $gone && $gone < 2.5,
   sprintf('the old worker exited once its waiters were done (%.2f s)',
           $gone // -1));

# quit: a waiter behind a lock that outlasts its wait gets its 503 and
# keeps the worker no longer than that

$redis->cmd('SET', 'lock:fox', 'foreign', 'PX', 10000);

my $waiter = post('/short', 'w', 'fox');
wait_queued('lock:fox', 1);

$t = time;
ok($h->stop(timeout => 5), 'quit, without TERM');
$took = time - $t;
ok($took < 1.5, sprintf('the worker exited after the wait (%.2f s)',
                        $took));

($r[0]) = $h->wait_all($waiter);
is($r[0]{status}, 503, 'the waiter was answered 503');
is(error_of($r[0]), 'sender_busy', 'sender_busy');

# quit while requests wait for a lock that will come: they get it

$h->start($conf);
$up->clear;

@w = (post('/closed?delay=0.3', 'a', 'gil'),
      map { sleep 0.05; post('/closed?delay=0.3', $_, 'gil') } qw/b c/);
ok(wait_queued('lock:gil', 2), 'two waiting');

$t = time;
ok($h->stop(timeout => 5), 'quit, without TERM');
ok(time - $t < 2, 'promptly');

@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'the waiters got their turn before the worker exited');
is(ids(), 'a,b,c', 'in order');
is_deeply($redis->settled_keys, [ 'lock:fox' ],
          'all released (but the foreign lock)');

$h->done;
