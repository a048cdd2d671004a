#!/usr/bin/perl

# Release on every way a request ends: the upstream answered (2xx or 5xx),
# was down (502), an error_page redirect served the answer.  When the
# request ends before the app answered (504, the client went away), the
# lock is left to expire instead: the app may still be at work.  With
# webhook_lock_hold the key stays for what is left of the hold; a lock
# that went to another request is never released by the first.

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

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_ttl   10s;

    proxy_set_header X-Lock $webhook_lock_status;
    proxy_read_timeout 300ms;

    location /hook {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /slow {
        proxy_read_timeout 5s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /down {
        proxy_pass http://127.0.0.1:%%PORT_NOTHING%%;
    }

    location /fallback {
        error_page 502 = @fallback;
        proxy_pass http://127.0.0.1:%%PORT_NOTHING%%;
    }

    location @fallback {
        return 200 "fallback $webhook_lock_status\n";
    }

    location /hold {
        webhook_lock_hold 2s;
        proxy_read_timeout 5s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /short {
        webhook_lock_ttl 1500ms;
        proxy_read_timeout 5s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

sub body { encode_json({ from => $_[0] }) }

sub left {
    my ($key, $name) = @_;

    my $pttl = $redis->cmd('PTTL', $key);
    ok($pttl > 0 && $pttl <= 10000, "$name ($pttl ms left)");
}

sub gone_soon {
    my ($key, $name) = @_;

    ok($h->wait_for(sub { !$redis->cmd('EXISTS', $key) }, timeout => 5),
       $name);
}

# the scripts Redis has run: a release is one more
sub evalsha_calls {
    my ($n) = $redis->cmd('INFO', 'commandstats') =~ /^cmdstat_evalsha:calls=(\d+)/m;
    return $n // 0;
}

my $r;

# the upstream answered

$r = $h->request(POST => '/hook', body => body('a'));
is($r->{status}, 200, '200 from the upstream');
gone_soon('lock:a', 'released after a 200');

$r = $h->request(POST => '/hook?status=500', body => body('b'));
is($r->{status}, 500, '500 from the upstream');
gone_soon('lock:b', 'released after a 500');

# the upstream is down, or too slow

$r = $h->request(POST => '/down', body => body('c'));
is($r->{status}, 502, 'upstream down: 502');
gone_soon('lock:c', 'released after a 502');

my $mark = $h->log_mark;

$r = $h->request(POST => '/hook?delay=1', body => body('d'));
is($r->{status}, 504, 'upstream too slow: 504');
$h->error_log_like(qr/webhook lock left to expire: the request ended before /
                   . qr/the app answered, held \d+ms, key "lock:d"/,
                   'a 504 leaves the lock, and says so', since => $mark);
left('lock:d', 'left to expire after a 504');

# the client went away while the upstream worked

$h->request(POST => '/slow?delay=2', body => body('e'), abort_after => 0.3);
$h->error_log_like(qr/left to expire: .* key "lock:e"/,
                   'the client gone before the app answered: left',
                   since => $mark);
left('lock:e', 'left to expire when the client went away');
like($h->access_log, qr/ 499 /, 'nginx saw the client go (499)');

# error_page sent the request elsewhere

$r = $h->request(POST => '/fallback', body => body('f'));
is($r->{status}, 200, 'error_page answered');
is($r->{body}, "fallback acquired\n",
   'the named location saw the lock and did not lock again');
gone_soon('lock:f', 'released after an error_page redirect');

# webhook_lock_hold keeps the key for the rest of the hold (2 s), not
# for its TTL (10 s)

my $t = time;
$r = $h->request(POST => '/hold', body => body('g'));
is($r->{status}, 200, 'held request forwarded');
my $pttl;
$h->wait_for(sub { $pttl = $redis->cmd('PTTL', 'lock:g'); $pttl <= 2000 });
ok($pttl > 0 && $pttl <= 2000, "kept for the rest of the hold ($pttl ms)");

$r = $h->request(POST => '/hold', body => body('g'));
is($r->{status}, 503, 'the same sender within the hold: 503');

$h->wait_for(sub { !$redis->cmd('EXISTS', 'lock:g') });
ok(!$redis->cmd('EXISTS', 'lock:g') && time - $t < 9,
   sprintf('gone once the hold is over (%.1f s), before the TTL',
           time - $t));

# held in the upstream until the hold is over: 2.2 s after it came there,
# later than the lock was taken

$up->clear;
my $long = $h->request_async(POST => '/hold?hold=h', body => body('h'),
                             timeout => 10);
$up->wait_arrived(1);
my ($arrived) = split ' ', $h->read_file('upstream-upstream.arrived');
sleep 0.02 while time < $arrived + 2.2;
$up->release('h');

($r) = $h->wait_all($long);
is($r->{status}, 200, 'a request longer than the hold');
gone_soon('lock:h', 'released at once when the hold is already over');

# a lock renewed past its ttl while in the app; one that went to another
# is neither renewed nor released

$up->clear;
my $slow = $h->request_async(POST => '/short?hold=i', body => body('i'));
$up->wait_arrived(1);
my $token = $redis->cmd('GET', 'lock:i') // '';
my $taken = time;
$h->wait_for(sub { time > $taken + 2 * 1.5 });
like($token, qr/^[0-9a-f]{32}\z/, 'the slow request holds its lock');
is($redis->cmd('GET', 'lock:i') // '', $token,
   'the slow request\'s lock outlived twice its ttl, renewed');
$redis->cmd('SET', 'lock:i', 'another-request', 'PX', 10000);

my $calls = evalsha_calls();
$up->release('i');
($r) = $h->wait_all($slow);
is($r->{status}, 200, 'the slow request ended');
ok($h->wait_for(sub { evalsha_calls() > $calls }), 'its release ran');
is($redis->cmd('GET', 'lock:i'), 'another-request',
   'its release left the new owner\'s lock alone');

$h->done;
