#!/usr/bin/perl

# The lock covers the app's work.  A slow app outlives webhook_lock_ttl
# without losing the lock (it is renewed while the request is in the
# app); a request that ends before the app answered (the client gave up:
# 499, proxy_read_timeout: 504) leaves the lock to expire instead of
# handing it on, so a redelivery never walks in beside the app's work.
# The app here holds each request until the test lets it go.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $dir = $h->testdir;

# "in-ID" once the request is in the app; it answers once "out-ID" exists

my $up = $h->upstream(handler => sub {
    my ($req) = @_;
    my ($id) = $req->{uri} =~ /[?&]id=([\w-]+)/;

    open my $fh, '>', "$dir/in-$id";
    close $fh;

    my $until = time + 60;
    sleep 0.01 until -e "$dir/out-$id" || time > $until;

    return ();
});

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format st '$arg_id $status $webhook_lock_status';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/st.log st;

    webhook_lock     json;
    webhook_sender   from;
    webhook_lock_key lock:$webhook_sender;

    location /app {
        webhook_lock_ttl 2s;
        proxy_read_timeout 60s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /early {
        webhook_lock_ttl 3s;
        proxy_read_timeout 60s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /timeout {
        webhook_lock_ttl 3s;
        proxy_read_timeout 1s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location = /status {
        webhook_status;
    }
}
CONF

sub touch { open my $fh, '>', "$dir/$_[0]" or die; close $fh }

sub wait_file {
    my ($name) = @_;

    for (1 .. 1000) {
        return 1 if -e "$dir/$name";
        sleep 0.01;
    }

    return 0;
}

sub post {
    my ($uri, $from, %opts) = @_;
    return $h->request(POST => $uri, body => encode_json({ from => $from }),
                       timeout => 20, %opts);
}

sub post_async {
    my ($uri, $from) = @_;
    return $h->request_async(POST => $uri, timeout => 20,
                             body => encode_json({ from => $from }));
}

# the access log line of a request, once it is there
sub logged {
    my ($id) = @_;

    for (1 .. 1000) {
        my ($line) = grep { /^$id / } split /\n/, $h->read_file('st.log');
        return $line if defined $line;
        sleep 0.01;
    }

    return '';
}

sub in_app { -e "$dir/in-$_[0]" ? 1 : 0 }

###############################################################################

# the worker's first connect may time out on a slow machine: retried

touch('out-warm');

for (1 .. 100) {
    last if (post('/app?id=warm', 'warm')->{status} // 0) == 200;
    sleep 0.05;
}

# a slow app: twice its ttl in the app, and the lock is still held

my $a1 = post_async('/app?id=a1', 'alice');
ok(wait_file('in-a1'), 'a1 is in the app');

# more than twice webhook_lock_ttl: the time under test; a renewal every
# third of the ttl leaves a worker 1.3 s of slack on a busy machine

sleep 4.4;

touch('out-a2');
my $r = post('/app?id=a2', 'alice');
is($r->{status}, 503, 'a redelivery past the ttl is held back: 503');
is(in_app('a2'), 0, 'and never reached the app');
like($redis->cmd('GET', 'lock:alice') // '', qr/^[0-9a-f]{32}\z/,
     'the lock outlived its ttl');

touch('out-a1');
($r) = $h->wait_all($a1);
is($r->{status}, 200, 'the slow request ended 200');
is(logged('a1'), 'a1 200 acquired', 'and was logged so');

touch('out-a3');
$r = post('/app?id=a3', 'alice');
is($r->{status}, 200, 'then the sender goes through again');

###############################################################################

# the client gives up while the app works: 499

my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                 PeerPort => $h->port('nginx'))
    or die "connect: $!";
my $body = encode_json({ from => 'bob' });

print $sock "POST /early?id=b1 HTTP/1.1\r\nHost: localhost\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: " . length($body) . "\r\n"
            . "Connection: close\r\n\r\n$body";

ok(wait_file('in-b1'), 'b1 is in the app');
close $sock;

is(logged('b1'), 'b1 499 acquired', 'the client gave up: 499');

touch('out-b2');
$r = post('/early?id=b2', 'bob');
is($r->{status}, 503, 'the redelivery while the app works: 503');
is(in_app('b2'), 0, 'and never reached the app');
ok($redis->cmd('PTTL', 'lock:bob') > 0, 'the lock was left to expire');

touch('out-b1');

###############################################################################

# proxy_read_timeout while the app works: 504

my $c1 = post_async('/timeout?id=c1', 'carol');
ok(wait_file('in-c1'), 'c1 is in the app');

($r) = $h->wait_all($c1);
is($r->{status}, 504, 'proxy_read_timeout: 504');
is(logged('c1'), 'c1 504 acquired', 'logged so');

touch('out-c2');
$r = post('/timeout?id=c2', 'carol');
is($r->{status}, 503, 'the redelivery while the app works: 503');
is(in_app('c2'), 0, 'and never reached the app');
ok($redis->cmd('PTTL', 'lock:carol') > 0, 'the lock was left to expire');

touch('out-c1');

# once the app is done and the ttl is over, the sender goes through

for my $who (qw/bob carol/) {
    for (1 .. 1000) {
        last unless $redis->cmd('EXISTS', "lock:$who");
        sleep 0.01;
    }
}

touch('out-b3');
touch('out-c3');
is(post('/early?id=b3', 'bob')->{status}, 200, 'bob, after the ttl: 200');
is(post('/timeout?id=c3', 'carol')->{status}, 200,
   'carol, after the ttl: 200');

###############################################################################

my @reqs = $up->requests;
my ($max, $by) = NgxHarness::max_concurrency(\@reqs,
                     sub { decode_json($_[0]{body})->{from} });

is($max, 1, 'never two of one sender in the app: '
            . join(' ', map { "$_=$by->{$_}" } sort keys %$by));

my $st = decode_json($h->request(GET => '/status?format=json')->{body});
is($st->{webhook_lock_locks_left_total}, 2,
   'webhook_status: two locks left to expire');
is($st->{webhook_lock_locks_held}, 0, 'none held now');

$h->error_log_like(qr/left to expire: .* key "lock:bob"/, 'logged: bob');
$h->error_log_like(qr/left to expire: .* key "lock:carol"/, 'logged: carol');

$h->done;
