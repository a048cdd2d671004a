#!/usr/bin/perl

# Waiting at the edge (webhook_lock_wait): requests of one sender go to the
# upstream one at a time, in the order they came, none answered 503; the
# hold spaces them; past the wait, or past the queue's size, 503.  A waiter
# whose client goes away leaves without stalling the ones behind it, also
# when the lock had just been handed to it.  Bodies with several senders
# queue for all their keys without deadlock.  With webhook_dedup, a
# redelivery waiting behind its original is answered as a duplicate when
# its turn comes, or goes through if the original failed.
#
# Nothing here depends on how fast the machine is: the request holding a
# lock is held in the upstream (?hold=) until the test has put in place
# what must wait behind it, each next request is sent once the one before
# is in the queue, and a client goes away when the test says so.  Upper
# bounds on times tell a wake-up from the slow poll (0.75 s at the
# earliest) or a refusal from the end of a wait.

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
my $up = $h->upstream(delay => 0.1);

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     msgs[*].from from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_ttl   10s;
    webhook_lock_wait  10s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Sender $webhook_senders;
    proxy_set_header X-Lock $webhook_lock_status;
    proxy_set_header X-Wait $webhook_lock_wait_time;
    proxy_set_header X-Redis $webhook_redis_time;
    proxy_set_header X-Start $msec;

    location /hook {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /hold {
        webhook_lock_hold 300ms;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /long {
        webhook_lock_hold 3s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /short {
        webhook_lock_wait 500ms;
        webhook_retry_after 3;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /small {
        webhook_lock_queue 2;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /dedup {
        webhook_message_id id;
        webhook_dedup      1h;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /nowait {
        webhook_lock_wait 0;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location = /status {
        webhook_status;
    }
}
CONF

# one request per sender list, X-Id set, sent at "at"
sub post {
    my ($uri, $id, $at, @from) = @_;

    my $body = @from > 1
        ? encode_json({ msgs => [ map { { from => $_ } } @from ] })
        : encode_json({ from => $from[0] });

    return $h->request_async(POST => $uri, body => $body, timeout => 15,
                             headers => [ 'X-Id' => $id ],
                             defined $at ? (at => $at) : ());
}

sub by_id { my %r = map { $_->{headers}{'x-id'} => $_ } @_; return \%r }

# $msec as integer milliseconds: differences exact
sub start_ms { $_[0]{headers}{'x-start'} =~ tr/.//dr }

sub status { decode_json($h->request(GET => '/status?format=json')->{body}) }

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

# until $n requests wait in the queue of this key
sub wait_queued {
    my ($key, $n) = @_;
    return $h->wait_for(sub { $redis->cmd('LLEN', "$key:q") >= $n });
}

# until the upstream has seen $n requests since it was cleared
sub wait_arrived { $up->wait_arrived($_[0] // 1) }

# A request held in the upstream (?hold=NAME) until release: the lock
# stays taken, however long the test takes to set up what comes next.
# Each next request of the sender is sent once the one before waits.
sub in_turn {
    my ($key, @posts) = @_;

    my @handles = (shift(@posts)->());
    wait_arrived(1) or die "the first did not reach the upstream\n";

    my $n = 0;

    for my $post (@posts) {
        push @handles, $post->();
        wait_queued($key, ++$n) or die "request $n did not queue\n";
    }

    return @handles;
}

# the slow poll asks again after 0.75 s at the earliest: a request that
# came sooner was woken up
my $POLL = 0.75;

###############################################################################

# six of one sender, an upstream of 100 ms, the first held there until
# the other five wait: one at a time, in the order sent, none refused

my @hd = in_turn('lock:alice',
                 sub { post('/hook?hold=alice', 0, undef, 'alice') },
                 map { my $i = $_; sub { post('/hook', $i, undef, 'alice') } }
                     1 .. 5);
$up->release('alice');

my @res = $h->wait_all(@hd);

is(join(',', map { $_->{status} } @res), '200,200,200,200,200,200',
   'six requests of one sender: all forwarded, none 503');

my @reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5',
   'they reached the upstream in the order sent');
is(NgxHarness::max_concurrency(\@reqs), 1, 'one at a time');
is(join(',', map { $_->{headers}{'x-lock'} } @reqs),
   'acquired,waited,waited,waited,waited,waited',
   '$webhook_lock_status: acquired, then waited');
is($reqs[0]{headers}{'x-wait'}, '0.000', 'the first did not wait');
ok((grep { $_->{headers}{'x-wait'} > 0.05 } @reqs[1 .. 5]) == 5,
   '$webhook_lock_wait_time of the others: '
   . join(' ', map { $_->{headers}{'x-wait'} } @reqs[1 .. 5]));

ok((grep { $_->{headers}{'x-redis'} < $_->{headers}{'x-wait'} }
    @reqs[1 .. 5]) == 5,
   '$webhook_redis_time is Redis\'s own time, not the wait: '
   . join(' ', map { $_->{headers}{'x-redis'} } @reqs));

my @gaps = map { $reqs[$_]{arrived} - $reqs[$_ - 1]{finished} } 1 .. 5;
ok((grep { $_ < $POLL } @gaps) == 5,
   'each went in once the one before was answered, woken up, not by the'
   . ' slow poll: ' . join(' ', map { sprintf '%.3f', $_ } @gaps));

is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');

my $st = status();
is_deeply([ @{ $st->{requests}{server} }{qw(acquired waited busy)} ],
          [ 1, 5, 0 ], 'webhook_status: 1 acquired, 5 waited');
is($st->{webhook_lock_wait_seconds}{count}, 6, 'the wait histogram: six');
ok($st->{webhook_lock_wait_seconds}{sum} > 1,
   "and their waits ($st->{webhook_lock_wait_seconds}{sum} s)");
is($st->{webhook_lock_requests_waiting}, 0, 'nobody waiting now');
ok($st->{webhook_lock_redis_duration_seconds}{sum}
   < $st->{webhook_lock_wait_seconds}{sum},
   'the Redis histogram has no waits in it ('
   . $st->{webhook_lock_redis_duration_seconds}{sum} . ' s)');

# with webhook_lock_hold 300ms they are at least 300 ms apart

$up->clear;

@hd = in_turn('lock:bob', sub { post('/hold?hold=bob', 0, undef, 'bob') },
              map { my $i = $_; sub { post('/hold', $i, undef, 'bob') } }
                  1 .. 5);
$up->release('bob');

@res = $h->wait_all(@hd);

is(join(',', map { $_->{status} } @res), '200,200,200,200,200,200',
   'with a hold: all six forwarded');

@reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5',
   'in the order sent');

my @starts = map { start_ms($_) } @reqs;
my @apart = map { $starts[$_] - $starts[$_ - 1] } 1 .. 5;
ok((grep { $_ >= 300 } @apart) == 5,
   "proxied at least 300 ms apart: @apart");

# the first was held in the upstream: from the second on, each went at
# the end of the hold

ok((grep { $_ < 300 + $POLL * 1000 } @apart[1 .. 4]) == 4,
   'at the end of the hold, not at a slow poll');

# $msec is nginx's cached time, never later than the real one

my @arrived = map { $reqs[$_]{arrived} - $starts[$_ - 1] / 1000 } 1 .. 5;
ok((grep { $_ >= 0.3 } @arrived) == 5,
   'each reached the upstream 300 ms after the one before went: '
   . join(' ', map { sprintf '%.3f', $_ } @arrived));

###############################################################################

# past the wait: 503 busy

$up->clear;

my $holder = post('/short?hold=carol', 'h', undef, 'carol');
wait_arrived();

my $t = time;
my $r = $h->request(POST => '/short', body => encode_json({ from => 'carol' }),
                    timeout => 5);
my $took = time - $t;

is($r->{status}, 503, 'still held after webhook_lock_wait: 503');
is(error_of($r), 'sender_busy', 'sender_busy');
is($r->{headers}{'retry-after'}, '3', 'with Retry-After');
ok($took > 0.45 && $took < 4, sprintf('after the wait (%.3f s)', $took));
is($redis->cmd('LLEN', 'lock:carol:q'), 0, 'and out of the queue');
$h->error_log_like(qr/webhook sender busy, waited \d+ms, key "lock:carol"/,
                   'logged with the time waited');

$up->release('carol');
($r) = $h->wait_all($holder);
is($r->{status}, 200, 'the holder went through');

# a queue full: 503 at once

$up->clear;

$holder = post('/small?hold=dave', 'h', undef, 'dave');
wait_arrived();

my @waiting = map { post('/small', "w$_", undef, 'dave') } 1 .. 2;
ok(wait_queued('lock:dave', 2), 'two waiting');
is(status()->{webhook_lock_requests_waiting}, 2,
   'webhook_status: two requests waiting');

$t = time;
$r = $h->request(POST => '/small', body => encode_json({ from => 'dave' }));
$took = time - $t;

is($r->{status}, 503, 'a third while two wait, webhook_lock_queue 2: 503');
is(error_of($r), 'sender_busy', 'sender_busy');
ok($took < 5, sprintf('at once, not after its wait of 10 s (%.3f s)',
                      $took));
$h->error_log_like(qr/webhook sender busy, 2 waiting already/,
                   'logged as a full queue');

$up->release('dave');
@res = $h->wait_all($holder, @waiting);
is(join(',', map { $_->{status} } @res), '200,200,200',
   'the holder and both waiters went through');

# no webhook_lock_wait: 503 at once, as without waiting

$up->clear;

$holder = post('/hook?hold=dora', 'h', undef, 'dora');
wait_arrived();

$t = time;
$r = $h->request(POST => '/nowait', body => encode_json({ from => 'dora' }),
                 timeout => 15);
is($r->{status}, 503, 'webhook_lock_wait 0: 503');
ok(time - $t < 5, 'at once, not after the 10 s of the server\'s wait');
$up->release('dora');
$h->wait_all($holder);

###############################################################################

# a waiter whose client goes away: the next one goes in as soon as the
# holder is done

$up->clear;

$holder = post('/hook?hold=erin', 'a', undef, 'erin');
wait_arrived();

my $abort = $h->testdir . '/abort-erin';
my $gone = $h->request_async(POST => '/hook', body => encode_json({
                             from => 'erin' }), abort_on => $abort,
                             timeout => 30, headers => [ 'X-Id' => 'b' ]);
ok(wait_queued('lock:erin', 1), 'the second waits');

my $next = post('/hook', 'c', undef, 'erin');
ok(wait_queued('lock:erin', 2), 'the third waits');

$h->write_file('abort-erin', '');
$h->wait_for(sub { $redis->cmd('LLEN', 'lock:erin:q') < 2 });
is($redis->cmd('LLEN', 'lock:erin:q'), 1, 'the second left when its '
                                          . 'client went away');

$up->release('erin');
@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'first and third: 200');

my $ids = by_id($up->requests);
ok(!$ids->{b}, 'the second never reached the upstream');
my $gap = $ids->{c}{arrived} - $ids->{a}{finished};
ok($gap < $POLL, sprintf('the third went in at once, woken up (%.3f s)',
                         $gap));

# the lock handed over, within the hold (3 s), to a waiter whose client
# then goes: passed on to the next, at the end of the hold

$up->clear;

$holder = post('/long?hold=fay', 'a', undef, 'fay');
wait_arrived();

$abort = $h->testdir . '/abort-fay';
$gone = $h->request_async(POST => '/long', body => encode_json({
                          from => 'fay' }), abort_on => $abort,
                          timeout => 30, headers => [ 'X-Id' => 'b' ]);
wait_queued('lock:fay', 1);
$next = post('/long', 'c', undef, 'fay');
wait_queued('lock:fay', 2);

# the first answered: the second is handed the lock, out of the queue

$up->release('fay');
ok($h->wait_for(sub { $h->done_async($holder)
                      && $redis->cmd('LLEN', 'lock:fay:q') == 1 }),
   'the first answered, the lock handed to the second');
$h->write_file('abort-fay', '');

@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'first and third: 200');

$ids = by_id($up->requests);
ok(!$ids->{b}, 'the second, handed the lock within the hold, never went');
$gap = start_ms($ids->{c}) - start_ms($ids->{a});
ok($gap >= 3000 && $gap < 3000 + $POLL * 1000,
   "the third went at the end of the hold, not at a slow poll ($gap ms)");
is_deeply($redis->settled_keys(5), [], 'nothing left behind');

###############################################################################

# several senders in one body: all keys at once, in turn

$up->clear;

@hd = (post('/hook?delay=0.2&hold=hal', 'x', undef, 'hal', 'ivy'));
wait_arrived();
push @hd, post('/hook?delay=0.2', 'y', undef, 'ivy', 'hal');
wait_queued('lock:hal', 1) && wait_queued('lock:ivy', 1);
push @hd, post('/hook?delay=0.2', 'z', undef, 'hal');
wait_queued('lock:hal', 2);
push @hd, post('/hook?delay=0.2', 'w', undef, 'ivy');
wait_queued('lock:ivy', 2);

$up->release('hal');
my $released = time;
@res = $h->wait_all(@hd);

is(join(',', map { $_->{status} } @res), '200,200,200,200',
   'crossed two-sender bodies and single ones: all forwarded');

@reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs[0, 1]), 'x,y',
   'the two-sender bodies first, in their order');
my (undef, $per) = NgxHarness::max_concurrency(
    [ map { my $q = $_; map { { %$q, s => $_ } }
                        split /,/, $q->{headers}{'x-sender'} } @reqs ],
    sub { $_[0]{s} });
is_deeply($per, { hal => 1, ivy => 1 }, 'never two of one sender at once');
ok($reqs[3]{finished} - $released < 5,
   'no deadlock: done well before the wait of 10 s');
is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');

###############################################################################

# nobody hands over a lock that simply expires (a foreign one): the
# waiter first in line asks again when it expires

$redis->cmd('SET', 'lock:gus', 'foreign', 'PX', 300);

$t = time;
$r = $h->request(POST => '/hook', body => encode_json({ from => 'gus' }));
$took = time - $t;

is($r->{status}, 200, 'a lock nobody hands over: forwarded once expired');
ok($took > 0.3 && $took < $POLL,
   sprintf('right then, before any slow poll (%.3f s)', $took));

# a foreign lock that is deleted: the slow poll finds out

$redis->cmd('SET', 'lock:gus', 'foreign');
my $poll = post('/hook', 'p', undef, 'gus');
wait_queued('lock:gus', 1);
$redis->cmd('DEL', 'lock:gus');
$t = time;

($r) = $h->wait_all($poll);
$took = time - $t;
is($r->{status}, 200, 'a lock deleted behind our back: forwarded');
ok($took < 3, sprintf('by the slow poll, well before the wait of 10 s'
                      . ' (%.3f s)', $took));

# an entry whose worker is gone (no subscriber on its channel) is skipped

$up->clear;

$holder = post('/hook?hold=hana', 'a', undef, 'hana');
wait_arrived();
$redis->cmd('RPUSH', 'lock:hana:q',
            ('0' x 32) . ' 99999999999999 10000 1 webhook_lock:gone');
$next = post('/hook', 'b', undef, 'hana');
ok(wait_queued('lock:hana', 2), 'queued behind an entry of a gone worker');

$up->release('hana');
@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'both forwarded');

$ids = by_id($up->requests);
$gap = $ids->{b}{arrived} - $ids->{a}{finished};
ok($gap < $POLL, sprintf('the gone one skipped at once (%.3f s)', $gap));
is_deeply($redis->settled_keys, [], 'its entry dropped');

###############################################################################

# dedup: a redelivery waits behind its original, then is a duplicate

sub post_id {
    my ($uri, $id, $from, $msg) = @_;

    return $h->request_async(POST => $uri, timeout => 15,
                             body => encode_json({ from => $from,
                                                   id => $msg }),
                             headers => [ 'X-Id' => $id ]);
}

$up->clear;

$holder = post_id('/dedup?hold=m1', 'a', 'ida', 'm1');
wait_arrived();
$next = post_id('/dedup', 'b', 'ida', 'm1');
ok(wait_queued('lock:ida', 1), 'the redelivery waits behind its original');

$up->release('m1');
@res = $h->wait_all($holder, $next);
is($res[0]{status}, 200, 'the original went through');
is($res[1]{status}, 200, 'the redelivery: 200');
is_deeply(eval { decode_json($res[1]{body}) }, { status => 'duplicate' },
          'answered as a duplicate when its turn came');
is(scalar $up->requests, 1, 'only the original reached the upstream');

# every id done: a duplicate at once, without waiting for the lock

$up->clear;

$holder = post_id('/dedup?hold=m2', 'c', 'ida', 'm2');
wait_arrived();

$t = time;
$r = $h->request(POST => '/dedup', body => encode_json({ from => 'ida',
                                                         id => 'm1' }));
$took = time - $t;
is_deeply(eval { decode_json($r->{body}) }, { status => 'duplicate' },
          'an id done already, the lock held: duplicate');
ok($took < 5, sprintf('at once, not after the wait of 10 s (%.3f s)',
                      $took));
$up->release('m2');
$h->wait_all($holder);

# the original failed: the waiting redelivery goes through

$up->clear;

$holder = post_id('/dedup?hold=m3&status=500', 'e', 'ida', 'm3');
wait_arrived();
$next = post_id('/dedup', 'f', 'ida', 'm3');
wait_queued('lock:ida', 1);

$up->release('m3');
@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '500,200',
   'the original failed, the redelivery went through');
is(join(',', map { $_->{headers}{'x-id'} } $up->requests), 'e,f',
   'both reached the upstream, in turn');
is(($up->requests)[1]{headers}{'x-lock'}, 'waited', 'after waiting');

# and is then done

$r = $h->request(POST => '/dedup', body => encode_json({ from => 'ida',
                                                         id => 'm3' }));
is_deeply(eval { decode_json($r->{body}) }, { status => 'duplicate' },
          'once through, a duplicate');
is_deeply([ grep { !/^webhook:dedup:/ } @{ $redis->settled_keys } ], [],
          'no lock and no queue left behind, only the done marks');

$h->done;
