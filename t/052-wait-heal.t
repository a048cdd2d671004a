#!/usr/bin/perl

# Queues that heal: a queue entry lives only while its request renews it,
# and whoever asks sweeps the dead entries at the head of the queue.  Two
# nginx nodes share one Redis.  A node's worker killed (SIGKILL) while it
# holds a sender's lock and has two requests queued for it: a request for
# that sender waiting on the other node gets the lock soon after the
# lock's ttl, not a 503 at the end of its wait.  Entries left behind by
# requests that are gone without leaving (a lost leave) are skipped the
# same way, and the live waiters behind them keep their order.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $ha = NgxHarness->new(needs => [qw/proxy redis/]);
my $hb = NgxHarness->new(needs => [qw/proxy redis/]);

my $redis = $ha->redis;
my $dir = $ha->testdir;

# a request with "X-Gate: NAME" stays in the upstream until the file NAME
# exists (at most a minute)

my $up = $ha->upstream(delay => 0.1, handler => sub {
    my ($req) = @_;

    my $gate = $req->{headers}{'x-gate'} or return;
    my $end = time + 60;

    sleep 0.02 until -e "$dir/$gate" || time > $end;

    return;
});

$hb->port(redis => $redis->port);
$hb->port(upstream => $up->port);

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock       json;
        webhook_sender     from;
        webhook_lock_key   lock:$webhook_sender;
        webhook_lock_ttl   6s;
        webhook_lock_wait  WAIT;

        proxy_set_header X-Id $http_x_id;
        proxy_set_header X-Gate $http_x_gate;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

# node a waits longer than node b: its dead entries would outlive b's wait

(my $conf_a = $conf) =~ s/WAIT/40s/;
(my $conf_b = $conf) =~ s/WAIT/20s/;

$ha->start($conf_a);
$hb->start($conf_b);

sub post {
    my ($h, $from, $id, @headers) = @_;

    return $h->request_async(POST => '/hook', timeout => 60,
                             body => encode_json({ from => $from }),
                             headers => [ 'X-Id' => $id, @headers ]);
}

sub until_true {
    my ($cond, $timeout) = @_;

    my $end = time + ($timeout // 5) * $ha->slowness;

    while (time < $end) {
        return 1 if $cond->();
        sleep 0.01;
    }

    return $cond->() ? 1 : 0;
}

sub queued { my ($key, $n) = @_; until_true(sub {
    $redis->cmd('LLEN', "$key:q") >= $n }) }

sub upstream_req {
    my ($id) = @_;
    my ($r) = grep { ($_->{headers}{'x-id'} // '') eq $id } $up->requests;
    return $r // { headers => {} };
}

sub both_subscribed {
    until_true(sub {
        @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') } >= 2 });
}

ok(both_subscribed(), 'both nodes listen for their wake-ups');

###############################################################################

# node a holds kim's lock in the upstream, two more of kim's requests wait
# on node a, one on node b, behind them

my $r1 = post($ha, 'kim', 'a1', 'X-Gate' => 'never');

ok(until_true(sub { $redis->cmd('EXISTS', 'lock:kim') }),
   'node a holds the lock');

my $r2 = post($ha, 'kim', 'a2');
ok(queued('lock:kim', 1), 'a second request waits on node a');

my $r3 = post($ha, 'kim', 'a3');
ok(queued('lock:kim', 2), 'a third request waits on node a');

my $r4 = post($hb, 'kim', 'b1');
ok(queued('lock:kim', 3), 'a request waits on node b, third in line');

ok($redis->cmd('EXISTS', 'lock:kim') && $redis->cmd('LLEN', 'lock:kim:q') == 3,
   'still held, three in line, when node a\'s worker is killed');

my @workers = $ha->worker_pids;
is(scalar @workers, 1, 'node a has one worker');

my $killed = time;
kill 'KILL', @workers;

my ($res) = $hb->wait_all($r4);
my $took = time - $killed;

is($res->{status}, 200, 'the waiter on node b is served');
is(upstream_req('b1')->{headers}{'x-lock'}, 'waited',
   '$webhook_lock_status: waited');
ok($took < 15,
   sprintf('soon after the lock\'s ttl, not at the end of its wait (%.1f s)',
           $took));
ok(!grep({ $_->{headers}{'x-id'} =~ /^a[23]$/ } $up->requests),
   'the killed worker\'s waiters never reached the app');

$ha->wait_all($r1, $r2, $r3);

###############################################################################

# lost leaves: two entries whose requests are gone without leaving (their
# last renewal half a second ago), ahead of two live waiters, behind a
# lock that expires by itself

my $t = $redis->cmd('TIME');
my $now = $t->[0] * 1000 + int($t->[1] / 1000);

is($redis->cmd('SET', 'lock:lee', 'elsewhere', 'PX', 5000), 'OK',
   'lee\'s lock is held elsewhere for 5 s');

# on a live worker's channel: only their lease tells they are dead

my ($channel) = @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') };

for my $i (1, 2) {
    my $entry = sprintf('%032x %d 6000 1 %s', $i, $now + 2500, $channel);
    $redis->cmd('RPUSH', 'lock:lee:q', $entry);
}

$redis->cmd('PEXPIRE', 'lock:lee:q', 60000);

my $start = time;

my $r5 = post($hb, 'lee', 'l1');
ok(queued('lock:lee', 3), 'a live waiter third in line');

my $r6 = post($hb, 'lee', 'l2');
ok(queued('lock:lee', 4), 'another behind it');

my @res = $hb->wait_all($r5, $r6);
$took = time - $start;

is(join(',', map { $_->{status} } @res), '200,200', 'both served');
is(join(',', map { $_->{headers}{'x-id'} }
             grep { $_->{headers}{'x-id'} =~ /^l/ } $up->requests),
   'l1,l2', 'in the order they came');
is(join(',', map { upstream_req($_)->{headers}{'x-lock'} } qw/l1 l2/),
   'waited,waited', 'both waited');
ok($took < 15, sprintf('the dead entries did not hold them (%.1f s)', $took));

is_deeply($redis->cmd('KEYS', 'lock:lee*'), [], 'nothing left of lee');

$hb->done;
$ha->done(allow => qr/exited on signal 9/);
