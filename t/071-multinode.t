#!/usr/bin/perl

# Two nginx nodes on their own ports, one Redis: the lock is the cluster's.
# A sender held on one node is busy on the other; webhooks of one sender
# spread over both nodes reach the app one at a time, and every one of
# them does in the end.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Provider;

my ($ha, $hb) = NgxHarness->nodes(2, needs => [qw/proxy redis/]);

my $redis = $ha->redis;
my $up = $ha->upstream(delay => 0.2);

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock        json;
        webhook_sender      from;
        webhook_message_id  id;
        webhook_lock_ttl    10s;
        webhook_retry_after 1;

        proxy_set_header X-Node %%NODE%%;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

# node b speaks to node a's Redis and upstream

NgxHarness->start_nodes([ $ha, $hb ], $conf, share => [qw/redis upstream/],
                        main => 'worker_processes 2;');


sub post {
    my ($h, $body, %opts) = @_;
    return $h->request(POST => '/hook', body => encode_json($body), %opts);
}

###############################################################################

# held on a, busy on b; another sender passes on b

# held in the upstream until the other node has answered

my $slow = $ha->request_async(POST => '/hook',
                             body => encode_json({ from => 'x', id => 'x1' }),
                             headers => { 'X-Test-Hold' => 'x1' });

$up->wait_arrived(1);

my $r = post($hb, { from => 'x', id => 'x2' });
is($r->{status}, 503, 'a sender held on node a is busy on node b');
like($r->{body}, qr/"sender_busy"/, 'sender_busy');
is($r->{headers}{'retry-after'}, 1, 'Retry-After from node b');

$r = post($hb, { from => 'y', id => 'y1' });
is($r->{status}, 200, 'another sender passes on node b meanwhile');

$up->release('x1');
($r) = $ha->wait_all($slow);
is($r->{status}, 200, 'node a finished');

is_deeply($redis->settled_keys(2), [], 'released');

$r = post($hb, { from => 'x', id => 'x3' });
is($r->{status}, 200, 'once released on a, node b takes the sender');

$up->clear;

###############################################################################

# bursts of one sender split over both nodes, the provider redelivering

my @hooks;

for my $s (1 .. 3) {
    push @hooks, map {
        { tag => "s$s.$_", body => encode_json({ from => "s$s",
                                                 id => "s$s.$_" }) }
    } 1 .. 8;
}

# every request is held in the upstream until both nodes have answered
# 503 to someone: the burst is held back on both, however the machine
# spreads its start

my %mark = map { $_->node => length $_->access_log } $ha, $hb;

my $t0 = time;
my $burst = Provider->send($ha, \@hooks, uri => '/hook',
                           ports => [ $ha->port, $hb->port ],
                           headers => { 'X-Test-Hold' => 'burst' },
                           retry_cap => 1, jitter => 0.3, deadline => 40);

ok($ha->wait_for(sub {
       !grep { $_->access_log($mark{ $_->node }) !~ /" 503 / } $ha, $hb
   }), 'both nodes answered 503 while the first were in the app');
$up->release('burst');

my $results = $burst->wait;

is(scalar(grep { !$_->{ok} } @$results), 0, 'every webhook delivered');

my %busy;

my %node = ($ha->port => $ha->node, $hb->port => $hb->node);

for my $res (@$results) {
    $busy{ $node{ $_->{port} } }++
        for grep { $_->{status} == 503 } @{ $res->{attempts} };
}

ok($busy{a} && $busy{b}, 'both nodes held senders back')
    or diag explain \%busy;

my @reqs = $up->requests;

is(scalar @reqs, 24, 'each webhook reached the app once');

my %via;
$via{ $_->{headers}{'x-node'} }++ for @reqs;
is(scalar keys %via, 2, 'through both nodes') or diag explain \%via;

my ($max, $by) = NgxHarness::max_concurrency(\@reqs, sub {
    decode_json($_[0]{body})->{from}
});

is($max, 1, 'never two requests of one sender in the app at once')
    or diag explain $by;

note(sprintf '24 webhooks over 2 nodes in %.1f s, %d answered 503 (a: %d,'
     . ' b: %d)', time - $t0, ($busy{a} // 0) + ($busy{b} // 0),
     $busy{a} // 0, $busy{b} // 0);

is_deeply($redis->settled_keys(2), [], 'no lock left');

$hb->done;
$ha->done;
