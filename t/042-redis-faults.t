#!/usr/bin/perl

# Redis faults: absent when nginx starts, killed in the middle, restarted;
# the failure policy applies while it is down (at once, not after a wait),
# and locking comes back by itself.  SCRIPT FLUSH changes nothing visible.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $up = $h->upstream;

# Redis is not there yet when nginx starts

my $port = $h->port('redis');

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%% timeout=300ms;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_sender msgs[*].from from;
    webhook_retry_after 5;
    proxy_set_header X-Lock $webhook_lock_status;

    location /closed {
        webhook_lock json;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /open {
        webhook_lock json;
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

sub post {
    my ($uri, @from) = @_;

    my $body = @from > 1
        ? encode_json({ msgs => [ map { { from => $_ } } @from ] })
        : encode_json({ from => $from[0] });

    return $h->request(POST => $uri, body => $body, timeout => 5);
}

sub locked_again {
    return $h->wait_for(sub { (post('/closed', 'probe')->{status} // 0)
                              == 200 }, interval => 0.1);
}

my $redis;

my $t = time;
my $r = post('/closed', 'a');
is($r->{status}, 503, 'Redis absent, fail closed: 503');
ok(time - $t < 1, 'answered at once, without waiting for Redis');
is($r->{headers}{'retry-after'}, '5', 'with Retry-After');
is_deeply(decode_json($r->{body}),
          { error => 'lock_unavailable', retry_after => 5 },
          'body says lock_unavailable');
is(scalar $up->requests, 0, 'nothing forwarded unlocked');

$r = post('/open', 'a');
is($r->{status}, 200, 'Redis absent, fail open: forwarded');
is(($up->requests)[0]{headers}{'x-lock'}, 'open', 'status open');
$h->error_log_like(qr/\[warn\].*forwarded unlocked/,
                   'fail open is logged as a warning');
$h->error_log_like(qr/redis 127\.0\.0\.1:\d+ .*(refused|unreachable)/i,
                   'the outage is logged');

# Redis comes: locking resumes by itself

$redis = $h->redis;
ok(locked_again(), 'locking resumed once Redis came up');
$h->error_log_like(qr/\[notice\].*redis .* (back|connected)/i,
                   'the recovery is logged');

$up->clear;
$r = post('/open', 'b');
is(($up->requests)[0]{headers}{'x-lock'}, 'acquired',
   'fail-open location locks again too');

# killed in the middle of a request, then restarted

$up->clear;
my $inflight = $h->request_async(POST => '/closed?hold=c', timeout => 15,
                                 body => encode_json({ from => 'c' }));
$up->wait_arrived(1);
$redis->kill;
$up->release('c');

($r) = $h->wait_all($inflight);
is($r->{status}, 200, 'a request in the upstream when Redis died finishes');

$t = time;
$r = post('/closed', 'd');
is($r->{status}, 503, 'Redis killed: 503');
ok(time - $t < 2.5, 'answered without hanging (timeout=300ms)');

my @r = map { post('/closed', "e$_") } 1 .. 5;
is(scalar(grep { $_->{status} == 503 } @r), 5,
   'every request while it is down: 503');

$redis->start;
ok(locked_again(), 'locking resumed after the restart');
is_deeply($redis->settled_keys, [], 'and released after');

# the lock scripts are loaded again after SCRIPT FLUSH

$r = post('/closed', 'f', 'g');
is($r->{status}, 200, 'two-sender body, scripts loaded');
is($redis->cmd('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH');

$up->clear;
$r = post('/closed', 'f', 'g');
is($r->{status}, 200, 'two-sender body after SCRIPT FLUSH');
is(($up->requests)[0]{headers}{'x-lock'}, 'acquired', 'and locked');
is_deeply($redis->settled_keys, [], 'its release worked too');

$h->done;
