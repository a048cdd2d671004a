#!/usr/bin/perl

# What a waiter leaves behind.  With webhook_dedup, a waiter that took the
# lock (and set its "processing" marks) while its client was gone leaves
# without its marks: the redelivery is forwarded right after, not
# answered duplicate_in_progress for the lock's ttl.

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

# a question held by CLIENT PAUSE must not time out: timeout=10s

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%% timeout=10s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_ttl   30s;
    webhook_lock_wait  20s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Lock $webhook_lock_status;

    location /dedup {
        webhook_message_id id;
        webhook_dedup      1h;
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

sub info_field {
    my ($section, $name) = @_;
    my ($v) = $redis->cmd('INFO', $section) =~ /^\Q$name\E:(\d+)/m;
    return $v // 0;
}

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

ok(until_true(sub {
       @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') } }),
   'the worker listens for its wake-ups');

###############################################################################

# dee's lock is held elsewhere for 5 s; dee's message m1 waits for it.
# Redis pauses writes: the waiter's next question is held; its client goes
# away meanwhile, and its leave follows the question.  When Redis goes on,
# the question takes the lock and sets the "processing" mark, and the
# leave gives the lock back and must take the mark with it.

is($redis->cmd('SET', 'lock:dee', 'elsewhere', 'PX', 5000), 'OK',
   'dee\'s lock is held elsewhere');

my $gone = post('/dedup', { from => 'dee', id => 'm1' });
ok(queued('lock:dee', 1), 'm1 waits for it');

is($redis->cmd('CLIENT', 'PAUSE', 30000, 'WRITE'), 'OK', 'Redis pauses');
ok(until_true(sub { info_field('clients', 'blocked_clients') >= 1 }),
   'the waiter\'s next question is held');

kill 'KILL', $gone->{pid};
$h->wait_all($gone);

ok(until_true(sub { $h->access_log =~ /" 499 / }), 'its client is gone');
ok(until_true(sub { !$redis->cmd('EXISTS', 'lock:dee') }),
   'the foreign lock expired');

is($redis->cmd('CLIENT', 'UNPAUSE'), 'OK', 'Redis goes on');

# the question takes the lock (its entry goes), then the leave gives the
# lock back

ok(until_true(sub {
       $redis->cmd('LLEN', 'lock:dee:q') == 0
       && !$redis->cmd('EXISTS', 'lock:dee') }),
   'the lock is free again, nobody in line');

my $r = $h->request(POST => '/dedup', timeout => 10,
                    body => encode_json({ from => 'dee', id => 'm1' }),
                    headers => [ 'X-Id' => 'again' ]);

is($r->{status}, 200, 'the redelivery of m1 is forwarded');
isnt(error_of($r), 'duplicate_in_progress', 'not duplicate_in_progress');
# released just after the response
ok(until_true(sub {
       ($redis->cmd('GET', 'webhook:dedup:{/dedup}:m1') // '') eq 'done' }),
   'm1 is done now');

$h->done;
