#!/usr/bin/perl

# Two nginx instances, two workers each, sharing one Redis (with a
# password, and db 2): the requests of one sender, sent to either instance
# in turn, still reach the upstream one at a time and in the order sent,
# spaced by the hold.  The first of each burst is held in the upstream
# until the others wait behind it, so the order does not depend on the
# machine's speed.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my ($h, $h2) = NgxHarness->nodes(2, needs => [qw/proxy redis/]);

my $redis = $h->redis(password => 's3cret');
my $up = $h->upstream(delay => 0.1);

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%% password=s3cret db=2;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_wait  10s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Node %%NODE%%;
    proxy_set_header X-Lock $webhook_lock_status;
    proxy_set_header X-Start $msec;

    location /hook {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /hold {
        webhook_lock_hold 300ms;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

NgxHarness->start_nodes([ $h, $h2 ], $conf, share => [qw/redis upstream/],
                        main => 'worker_processes 2;');

is($redis->cmd('SELECT', 2), 'OK', 'db 2');

sub channels {
    my $c = [];

    $h->wait_for(sub {
        $c = $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*');
        @$c >= 4;
    });

    return scalar @$c;
}

is(channels(), 4, 'each of the four workers listens on a channel of its own');

# Request $i goes to node a, b, a, b...  The first is held in the
# upstream (?hold=) and each next is sent once the one before waits: the
# order sent is the order in the queue, however fast the machine is.
sub burst {
    my ($uri, $from, $n) = @_;

    my $hold = "$from-hold";
    my $before = $up->arrived;
    my @hd;

    for my $i (0 .. $n - 1) {
        push @hd, ($i % 2 ? $h2 : $h)->request_async(POST =>
            $i ? $uri : "$uri?hold=$hold", timeout => 30,
            body => encode_json({ from => $from }),
            headers => [ 'X-Id' => $i ]);

        my $ok = $i ? $h->wait_for(sub {
                          $redis->cmd('LLEN', "lock:$from:q") >= $i })
                    : $up->wait_arrived($before + 1);

        die "request $i of $from is not in place\n" unless $ok;
    }

    $up->release($hold);

    return @hd;
}

my @res = $h->wait_all(burst('/hook', 'alice', 8));

is(join(',', map { $_->{status} } @res), join(',', ('200') x 8),
   'eight requests of one sender over two instances: all forwarded');

my @reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5,6,7',
   'in the order sent');
is(join(',', map { $_->{headers}{'x-node'} } @reqs),
   'a,b,a,b,a,b,a,b', 'alternating between the instances');
is(NgxHarness::max_concurrency(\@reqs), 1, 'one at a time');

# the slow poll would ask after 0.75 s at the earliest

my @gaps = map { $reqs[$_]{arrived} - $reqs[$_ - 1]{finished} } 1 .. 7;
ok((grep { $_ < 0.75 } @gaps) == 7,
   'each handed over at once, woken up across instances: '
   . join(' ', map { sprintf '%.3f', $_ } @gaps));

# with the hold

$up->clear;

@res = $h->wait_all(burst('/hold', 'bob', 6));

is(join(',', map { $_->{status} } @res), '200,200,200,200,200,200',
   'with a hold: all six forwarded');

@reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5',
   'in the order sent');

my @starts = map { $_->{headers}{'x-start'} =~ tr/.//dr } @reqs;
my @apart = map { $starts[$_] - $starts[$_ - 1] } 1 .. 5;

# the first was held in the upstream: the second came at least a hold
# after it, and each next one at the end of the hold

ok((grep { $_ >= 300 } @apart) == 5, "300 ms apart, across instances: @apart");
ok((grep { $_ < 300 + 750 } @apart[1 .. 4]) == 4,
   'at the end of the hold, not a slow poll later');

is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');
is($redis->cmd('SELECT', 0), 'OK', 'db 0');
is_deeply($redis->cmd('KEYS', '*'), [], 'nothing in db 0');

# each instance's end: its own log checks

$h2->done;
$h->done;
