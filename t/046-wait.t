#!/usr/bin/perl

# Waiting at the edge (webhook_lock_wait): requests of one sender go to the
# upstream one at a time, in the order they came, none answered 503; the
# hold spaces them; past the wait, or past the queue's size, 503.  A waiter
# whose client goes away leaves without stalling the ones behind it, also
# when the lock had just been handed to it.  Bodies with several senders
# queue for all their keys without deadlock.  With webhook_dedup, a
# redelivery waiting behind its original is answered as a duplicate when
# its turn comes, or goes through if the original failed.

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
        webhook_lock_hold 1s;
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

# until the request with this X-Id is in the upstream (or has been)
sub wait_queued {
    my ($key, $n) = @_;

    for (1 .. 200) {
        return 1 if $redis->cmd('LLEN', "$key:q") >= $n;
        sleep 0.01;
    }

    return 0;
}

###############################################################################

# six of one sender, 20 ms apart, an upstream of 100 ms: one at a time, in
# the order sent, none refused

my $t0 = time + 0.3;
my @res = $h->wait_all(map { post('/hook', $_, $t0 + 0.02 * $_, 'alice') }
                       0 .. 5);

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

ok((grep { $_->{headers}{'x-redis'} < 0.05 } @reqs) == 6,
   '$webhook_redis_time is Redis\'s own time, not the wait: '
   . join(' ', map { $_->{headers}{'x-redis'} } @reqs));

my @gaps = map { $reqs[$_]{arrived} - $reqs[$_ - 1]{finished} } 1 .. 5;
ok((grep { $_ < 0.1 } @gaps) == 5,
   'each went in as soon as the one before was answered: '
   . join(' ', map { sprintf '%.3f', $_ } @gaps));

is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');

my $st = status();
is_deeply([ @{ $st->{requests}{server} }{qw(acquired waited busy)} ],
          [ 1, 5, 0 ], 'webhook_status: 1 acquired, 5 waited');
is($st->{webhook_lock_wait_seconds}{count}, 6, 'the wait histogram: six');
ok($st->{webhook_lock_wait_seconds}{sum} > 1,
   "and their waits ($st->{webhook_lock_wait_seconds}{sum} s)");
is($st->{webhook_lock_requests_waiting}, 0, 'nobody waiting now');
ok($st->{webhook_lock_redis_duration_seconds}{sum} < 0.3,
   'the Redis histogram has no waits in it ('
   . $st->{webhook_lock_redis_duration_seconds}{sum} . ' s)');

# with webhook_lock_hold 300ms they are at least 300 ms apart

$up->clear;

$t0 = time + 0.3;
@res = $h->wait_all(map { post('/hold', $_, $t0 + 0.02 * $_, 'bob') } 0 .. 5);

is(join(',', map { $_->{status} } @res), '200,200,200,200,200,200',
   'with a hold: all six forwarded');

@reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5',
   'in the order sent');

my @starts = map { start_ms($_) } @reqs;
my @apart = map { $starts[$_] - $starts[$_ - 1] } 1 .. 5;
ok((grep { $_ >= 300 } @apart) == 5,
   "proxied at least 300 ms apart: @apart");
ok((grep { $_ < 450 } @apart) == 5, 'and not much more');

my @arrived = map { $reqs[$_]{arrived} - $reqs[$_ - 1]{arrived} } 1 .. 5;
ok((grep { $_ >= 0.29 } @arrived) == 5,
   'upstream arrivals 300 ms apart (fork jitter aside): '
   . join(' ', map { sprintf '%.3f', $_ } @arrived));

###############################################################################

# past the wait: 503 busy

$up->clear;

my $holder = post('/short?delay=2', 'h', undef, 'carol');
wait_queued('lock:carol', 0);
sleep 0.2;

my $t = time;
my $r = $h->request(POST => '/short', body => encode_json({ from => 'carol' }),
                    timeout => 5);
my $took = time - $t;

is($r->{status}, 503, 'still held after webhook_lock_wait: 503');
is(error_of($r), 'sender_busy', 'sender_busy');
is($r->{headers}{'retry-after'}, '3', 'with Retry-After');
ok($took > 0.45 && $took < 1.2, sprintf('after the wait (%.3f s)', $took));
is($redis->cmd('LLEN', 'lock:carol:q'), 0, 'and out of the queue');
$h->error_log_like(qr/webhook sender busy, waited \d+ms, key "lock:carol"/,
                   'logged with the time waited');

($r) = $h->wait_all($holder);
is($r->{status}, 200, 'the holder went through');

# a queue full: 503 at once

$up->clear;

$holder = post('/small?delay=1', 'h', undef, 'dave');
wait_queued('lock:dave', 0);
sleep 0.1;

my @waiting = map { post('/small', "w$_", undef, 'dave') } 1 .. 2;
ok(wait_queued('lock:dave', 2), 'two waiting');
is(status()->{webhook_lock_requests_waiting}, 2,
   'webhook_status: two requests waiting');

$t = time;
$r = $h->request(POST => '/small', body => encode_json({ from => 'dave' }));
$took = time - $t;

is($r->{status}, 503, 'a third while two wait, webhook_lock_queue 2: 503');
is(error_of($r), 'sender_busy', 'sender_busy');
ok($took < 0.3, sprintf('at once (%.3f s)', $took));
$h->error_log_like(qr/webhook sender busy, 2 waiting already/,
                   'logged as a full queue');

@res = $h->wait_all($holder, @waiting);
is(join(',', map { $_->{status} } @res), '200,200,200',
   'the holder and both waiters went through');

# no webhook_lock_wait: 503 at once, as without waiting

$holder = post('/hook?delay=1', 'h', undef, 'dora');
wait_queued('lock:dora', 0);
sleep 0.2;

$t = time;
$r = $h->request(POST => '/nowait', body => encode_json({ from => 'dora' }));
is($r->{status}, 503, 'webhook_lock_wait 0: 503');
ok(time - $t < 0.3, 'at once');
$h->wait_all($holder);

###############################################################################

# a waiter whose client goes away: the next one goes in as soon as the
# holder is done

$up->clear;

$holder = post('/hook?delay=1', 'a', undef, 'erin');
wait_queued('lock:erin', 0);
sleep 0.1;

my $gone = $h->request_async(POST => '/hook', body => encode_json({
                             from => 'erin' }), abort_after => 0.3,
                             headers => [ 'X-Id' => 'b' ]);
ok(wait_queued('lock:erin', 1), 'the second waits');

my $next = post('/hook', 'c', undef, 'erin');
ok(wait_queued('lock:erin', 2), 'the third waits');

sleep 0.4;
is($redis->cmd('LLEN', 'lock:erin:q'), 1, 'the second left when its '
                                          . 'client went away');

@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'first and third: 200');

my $ids = by_id($up->requests);
ok(!$ids->{b}, 'the second never reached the upstream');
my $gap = $ids->{c}{arrived} - $ids->{a}{finished};
ok($gap < 0.1, sprintf('the third went in at once (%.3f s)', $gap));

# the lock handed over to a waiter whose client has just gone: passed on
# to the next, at the end of the hold

$up->clear;

$t0 = time + 0.2;
$holder = post('/long', 'a', $t0, 'fay');
$gone = $h->request_async(POST => '/long', body => encode_json({
                          from => 'fay' }), abort_after => 0.5, at =>
                          $t0 + 0.05, headers => [ 'X-Id' => 'b' ]);
$next = post('/long', 'c', $t0 + 0.1, 'fay');

@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'first and third: 200');

$ids = by_id($up->requests);
ok(!$ids->{b}, 'the second, handed the lock within the hold, never went');
$gap = start_ms($ids->{c}) - start_ms($ids->{a});
ok($gap >= 1000 && $gap < 1200,
   "the third went at the end of the hold ($gap ms)");
is_deeply($redis->settled_keys(2), [], 'nothing left behind');

###############################################################################

# several senders in one body: all keys at once, in turn

$up->clear;

$t0 = time + 0.3;
@res = $h->wait_all(post('/hook?delay=0.2', 'x', $t0, 'hal', 'ivy'),
                    post('/hook?delay=0.2', 'y', $t0 + 0.02, 'ivy', 'hal'),
                    post('/hook?delay=0.2', 'z', $t0 + 0.04, 'hal'),
                    post('/hook?delay=0.2', 'w', $t0 + 0.06, 'ivy'));

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
ok($reqs[3]{finished} - $reqs[0]{arrived} < 1.5, 'no deadlock');
is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');

###############################################################################

# nobody hands over a lock that simply expires (a foreign one): the
# waiter first in line asks again when it expires

$redis->cmd('SET', 'lock:gus', 'foreign', 'PX', 600);

$t = time;
$r = $h->request(POST => '/hook', body => encode_json({ from => 'gus' }));
$took = time - $t;

is($r->{status}, 200, 'a lock nobody hands over: forwarded once expired');
ok($took > 0.6 && $took < 0.95,
   sprintf('right then, with the upstream\'s 0.1 s (%.3f s)', $took));

# a foreign lock that is deleted: the slow poll finds out

$redis->cmd('SET', 'lock:gus', 'foreign');
my $poll = post('/hook', 'p', undef, 'gus');
wait_queued('lock:gus', 1);
sleep 0.2;
$redis->cmd('DEL', 'lock:gus');
$t = time;

($r) = $h->wait_all($poll);
$took = time - $t;
is($r->{status}, 200, 'a lock deleted behind our back: forwarded');
ok($took < 1.5, sprintf('by the slow poll (%.3f s)', $took));

# an entry whose worker is gone (no subscriber on its channel) is skipped

$up->clear;

$holder = post('/hook?delay=0.5', 'a', undef, 'hana');
wait_queued('lock:hana', 0);
sleep 0.1;
$redis->cmd('RPUSH', 'lock:hana:q',
            ('0' x 32) . ' 99999999999999 10000 1 webhook_lock:gone');
$next = post('/hook', 'b', undef, 'hana');
ok(wait_queued('lock:hana', 2), 'queued behind an entry of a gone worker');

@res = $h->wait_all($holder, $next);
is(join(',', map { $_->{status} } @res), '200,200', 'both forwarded');

$ids = by_id($up->requests);
$gap = $ids->{b}{arrived} - $ids->{a}{finished};
ok($gap < 0.1, sprintf('the gone one skipped at once (%.3f s)', $gap));
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

$holder = post_id('/dedup?delay=0.5', 'a', 'ida', 'm1');
wait_queued('lock:ida', 0);
sleep 0.1;
$next = post_id('/dedup', 'b', 'ida', 'm1');
ok(wait_queued('lock:ida', 1), 'the redelivery waits behind its original');

@res = $h->wait_all($holder, $next);
is($res[0]{status}, 200, 'the original went through');
is($res[1]{status}, 200, 'the redelivery: 200');
is_deeply(eval { decode_json($res[1]{body}) }, { status => 'duplicate' },
          'answered as a duplicate when its turn came');
is(scalar $up->requests, 1, 'only the original reached the upstream');

# every id done: a duplicate at once, without waiting for the lock

$holder = post_id('/dedup?delay=0.5', 'c', 'ida', 'm2');
wait_queued('lock:ida', 0);
sleep 0.1;

$t = time;
$r = $h->request(POST => '/dedup', body => encode_json({ from => 'ida',
                                                         id => 'm1' }));
$took = time - $t;
is_deeply(eval { decode_json($r->{body}) }, { status => 'duplicate' },
          'an id done already, the lock held: duplicate');
ok($took < 0.3, sprintf('at once (%.3f s)', $took));
$h->wait_all($holder);

# the original failed: the waiting redelivery goes through

$up->clear;

$holder = post_id('/dedup?delay=0.3&status=500', 'e', 'ida', 'm3');
wait_queued('lock:ida', 0);
sleep 0.1;
$next = post_id('/dedup', 'f', 'ida', 'm3');

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
