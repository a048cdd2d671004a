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
    return $h->wait_for(sub { $redis->cmd('LLEN', "$key:q") >= $n });
}

# the holder, held in the upstream (?hold=$from) until released, then
# each next request once the one before waits
sub in_turn {
    my ($uri, $from, @ids) = @_;

    my $sep = $uri =~ /\?/ ? '&' : '?';
    my $before = $up->arrived;
    my @w = (post("$uri${sep}hold=$from", shift @ids, $from));

    $up->wait_arrived($before + 1) or die "the holder did not arrive\n";

    my $n = 0;

    for my $id (@ids) {
        push @w, post($uri, $id, $from);
        wait_queued("lock:$from", ++$n) or die "$id did not queue\n";
    }

    return @w;
}

sub locked_again {
    return $h->wait_for(sub {
        my $r = $h->request(POST => '/closed', timeout => 5,
                            body => encode_json({ from => 'probe' }));
        ($r->{status} // 0) == 200;
    }, interval => 0.1);
}

sub ids { join ',', map { $_->{headers}{'x-id'} } $up->requests }

# the worker's subscriber is listening again (after its backoff)
sub subscribed {
    return $h->wait_for(sub {
        @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') };
    });
}

###############################################################################

# Redis goes away while requests wait: each follows its location's policy
# at once

my @closed = in_turn('/closed', 'ann', qw/a c1 c2/);
my @open = in_turn('/open', 'ben', qw/b o1 o2/);

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
ok($took < 2.5, sprintf('at once (%.3f s), not at the end of the 5 s wait',
                        $took));

@r = $h->wait_all(@open[1, 2]);
is(join(',', map { $_->{status} } @r), '200,200',
   'fail open: the waiters are forwarded');
my %lock = map { $_->{headers}{'x-id'} => $_->{headers}{'x-lock'} }
           $up->requests;
is("$lock{o1},$lock{o2}", 'open,open', 'unlocked ($webhook_lock_status)');

$up->release($_) for qw/ann ben/;
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

my @w = in_turn('/closed', 'cid', qw/a b c/);
$up->release('cid');
@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'after the restart, waiting works');
is(ids(), 'a,b,c', 'in order');

###############################################################################

# the subscriber connection killed again and again while requests wait:
# they still get their turn, in order, within their wait

$up->clear;

@w = in_turn('/closed', 'dan', qw/a b c/);

# killed from before the holder is let go until the last is answered,
# and at least twice

my $kills = 0;

$kills += $redis->cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
$up->release('dan');

$h->wait_for(sub {
    $kills += $redis->cmd('CLIENT', 'KILL', 'TYPE', 'pubsub');
    $kills >= 2 && $h->done_async($w[2]);
});

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

@w = in_turn('/closed?delay=0.3', 'eve', qw/a b c d/);
ok(wait_queued('lock:eve', 3), 'three waiting in the old worker');

my @old = $h->worker_pids;
ok($h->reload(undef, wait_old => 0), 'reloaded');

push @w, post('/closed?delay=0.3', 'e', 'eve');
wait_queued('lock:eve', 4);

$t = time;
$up->release('eve');

my $gone;

$h->wait_for(sub {
    my %now = map { $_ => 1 } $h->worker_pids;
    return 0 if grep { $now{$_} } @old;
    $gone = time - $t;
}, interval => 0.01);

@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200,200,200',
   'every waiter answered, through the reload');
is(ids(), 'a,b,c,d,e', 'in order, the new worker\'s request last');
ok(defined $gone && $gone < 4,
   sprintf('the old worker exited once its waiters were done (%.2f s)',
           $gone // -1));

# quit: a waiter behind a lock that outlasts its wait gets its 503 and
# keeps the worker no longer than that

$redis->cmd('SET', 'lock:fox', 'foreign', 'PX', 120000);

my $waiter = post('/short', 'w', 'fox');
wait_queued('lock:fox', 1);

$t = time;
ok($h->stop(timeout => 5), 'quit, without TERM');
$took = time - $t;
ok($took < 5, sprintf('the worker exited after the 1 s wait, not with the'
                      . ' lock (%.2f s)', $took));

($r[0]) = $h->wait_all($waiter);
is($r[0]{status}, 503, 'the waiter was answered 503');
is(error_of($r[0]), 'sender_busy', 'sender_busy');

# quit while requests wait for a lock that will come: they get it

$h->start($conf);
$up->clear;

@w = in_turn('/closed?delay=0.3', 'gil', qw/a b c/);
ok(wait_queued('lock:gil', 2), 'two waiting');

# the holder is let go once the worker is shutting down

my @workers = $h->worker_pids;
my $mark = $h->log_mark;

$h->run_daemon(sub {
    $h->wait_for(sub {
        my $log = $h->error_log($mark);
        grep { $log =~ /\b$_#\d+: gracefully shutting down/
               || !-e "/proc/$_" } @workers;
    }, interval => 0.01);
    $up->release('gil');
});

$t = time;
ok($h->stop(timeout => 5), 'quit, without TERM');
ok(time - $t < 4 * $h->slowness, 'promptly');

@r = $h->wait_all(@w);
is(join(',', map { $_->{status} } @r), '200,200,200',
   'the waiters got their turn before the worker exited');
is(ids(), 'a,b,c', 'in order');
is_deeply($redis->settled_keys, [ 'lock:fox' ],
          'all released (but the foreign lock)');

$h->done;
