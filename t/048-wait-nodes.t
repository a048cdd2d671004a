#!/usr/bin/perl

# Two nginx instances, two workers each, sharing one Redis (with a
# password, and db 2): the requests of one sender, sent to either instance
# in turn, still reach the upstream one at a time and in the order sent,
# spaced by the hold.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $h2 = NgxHarness->new(needs => [qw/proxy redis/]);

my $redis = $h->redis(password => 's3cret');
my $up = $h->upstream(delay => 0.1);

# the second instance talks to the first one's Redis and upstream

my $conf = <<'CONF';
webhook_redis 127.0.0.1:REDIS password=s3cret db=2;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_wait  10s;

    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Node NODE;
    proxy_set_header X-Lock $webhook_lock_status;
    proxy_set_header X-Start $msec;

    location /hook {
        proxy_pass http://127.0.0.1:UPSTREAM;
    }

    location /hold {
        webhook_lock_hold 300ms;
        proxy_pass http://127.0.0.1:UPSTREAM;
    }
}
CONF

$conf =~ s/REDIS/$redis->port/ge;
$conf =~ s/UPSTREAM/$up->port/ge;

(my $one = $conf) =~ s/NODE/one/;
(my $two = $conf) =~ s/NODE/two/;

$h->start($one, main => 'worker_processes 2;');
$h2->start($two, main => 'worker_processes 2;');

sub channels {
    for (1 .. 300) {
        my $c = $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*');
        return scalar @$c if @$c >= 4;
        sleep 0.01;
    }

    return scalar @{ $redis->cmd('PUBSUB', 'CHANNELS', 'webhook_lock:*') };
}

is(channels(), 4, 'each of the four workers listens on a channel of its own');

# request $i goes to instance $i % 2

sub burst {
    my ($uri, $from, $n) = @_;

    my $t0 = time + 0.3;

    return map {
        ($_ % 2 ? $h2 : $h)->request_async(POST => $uri, timeout => 15,
            body => encode_json({ from => $from }),
            headers => [ 'X-Id' => $_ ], at => $t0 + 0.02 * $_)
    } 0 .. $n - 1;
}

my @res = $h->wait_all(burst('/hook', 'alice', 8));

is(join(',', map { $_->{status} } @res), join(',', ('200') x 8),
   'eight requests of one sender over two instances: all forwarded');

my @reqs = $up->requests;
is(join(',', map { $_->{headers}{'x-id'} } @reqs), '0,1,2,3,4,5,6,7',
   'in the order sent');
is(join(',', map { $_->{headers}{'x-node'} } @reqs),
   'one,two,one,two,one,two,one,two', 'alternating between the instances');
is(NgxHarness::max_concurrency(\@reqs), 1, 'one at a time');

my @gaps = map { $reqs[$_]{arrived} - $reqs[$_ - 1]{finished} } 1 .. 7;
ok((grep { $_ < 0.1 } @gaps) == 7,
   'each handed over at once, across instances: '
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
ok((grep { $_ >= 300 && $_ < 450 } @apart) == 5,
   "300 ms apart, across instances: @apart");

is($redis->cmd('SELECT', 2), 'OK', 'db 2');
is_deeply($redis->settled_keys, [], 'no lock and no queue left behind');
is($redis->cmd('SELECT', 0), 'OK', 'db 0');
is_deeply($redis->cmd('KEYS', '*'), [], 'nothing in db 0');

# each instance's end: its own log checks

$h2->done;
$h->done;
