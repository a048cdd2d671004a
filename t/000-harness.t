#!/usr/bin/perl

# (C) The webhook_lock authors

# Tests for the test harness itself, with plain nginx (no module).

###############################################################################

use warnings;
use strict;

use Test::More;

BEGIN { use FindBin; chdir($FindBin::Bin); }

use lib 'lib';
use NgxHarness;

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

select STDERR; $| = 1;
select STDOUT; $| = 1;

my $h = NgxHarness->new(module => 0, needs => [qw/proxy redis/]);

###############################################################################

# ports and pure helpers

is($h->port('a'), $h->port('A'), 'port stable per name');
isnt($h->port('a'), $h->port('b'), 'ports differ between names');

my @iv = (
    { arrived => 1.0, finished => 2.0, k => 'x' },
    { arrived => 1.5, finished => 2.5, k => 'x' },
    { arrived => 2.5, finished => 3.0, k => 'x' },    # touches, no overlap
    { arrived => 1.6, finished => 1.7, k => 'y' },
);

my ($max, $by) = NgxHarness::max_concurrency(\@iv, sub { $_[0]{k} });
is($max, 2, 'max_concurrency overall');
is_deeply($by, { x => 2, y => 1 }, 'max_concurrency per key');
is($h->max_concurrency(\@iv), 3, 'max_concurrency as method, one group');

###############################################################################

# real redis

my $redis = $h->redis;

is($redis->cmd('SET', 'k', "v\0\r\nx"), 'OK', 'redis SET');
is($redis->cmd('GET', 'k'), "v\0\r\nx", 'redis GET binary value');
is($redis->cmd('GET', 'nope'), undef, 'redis null bulk');
is($redis->cmd('INCR', 'n'), 1, 'redis integer');
is_deeply($redis->cmd('MGET', 'k', 'nope'), [ "v\0\r\nx", undef ],
          'redis array');
like($redis->cmd('BOGUS')->{err}, qr/^ERR unknown command/, 'redis error');

SKIP: {
    skip 'external Redis', 3 unless $redis->can_restart;

    $redis->stop;
    ok(!eval { $redis->cmd('PING'); 1 }, 'redis stopped');

    $redis->start;
    is($redis->cmd('PING'), 'PONG', 'redis restarted on the same port');
    is($redis->cmd('GET', 'k'), undef, 'redis restart lost the data');
}

###############################################################################

# scripted RESP server

my $mock = $h->mock_redis(rules => [
    [ 'GET'  => { reply => "\$3\r\nbar" } ],
    [ 'SLOW' => { delay => 0.3, reply => '+SLOW' } ],
    [ 'HANG' => { hang => 1 } ],
    [ 'SHUT' => { close => 1 } ],
    [ 'GARB' => { garbage => 1 } ],
    [ 'ONCE' => { reply => ':7', times => 1 } ],
]);

sub resp {
    my ($port, $bytes, $want, $timeout) = @_;

    my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port")
        or die "connect: $!";

    syswrite($s, $bytes);

    my $buf = '';
    my $sel = IO::Select->new($s);
    my $deadline = time + ($timeout // 2);

    while (length $buf < $want && time < $deadline) {
        last unless $sel->can_read($deadline - time);
        last unless sysread($s, $buf, 4096, length $buf);
    }

    return $buf;
}

my $mp = $mock->port;

is(resp($mp, "*1\r\n\$4\r\nPING\r\n*2\r\n\$3\r\nGET\r\n\$1\r\nk\r\n"
             . "PING\r\n", 20),
   "+PONG\r\n\$3\r\nbar\r\n+PONG\r\n", 'mock: pipelined and inline');

my $t0 = time;
is(resp($mp, "*1\r\n\$4\r\nSLOW\r\n", 7), "+SLOW\r\n", 'mock: delay');
cmp_ok(time - $t0, '>=', 0.3, 'mock: delay took its time');

is(resp($mp, "*1\r\n\$4\r\nHANG\r\n*1\r\n\$4\r\nPING\r\n", 1, 0.3), '',
   'mock: hang answers nothing');
is(resp($mp, "*1\r\n\$4\r\nSHUT\r\n", 1, 1), '', 'mock: close');
is(resp($mp, "*1\r\n\$4\r\nGARB\r\n", 10), "?garbage\r\n", 'mock: garbage');
is(resp($mp, "ONCE\r\nONCE\r\n", 9), ":7\r\n+OK\r\n", 'mock: times');

$mock->set_rules([ '*' => '-ERR down' ]);
is(resp($mp, "PING\r\n", 10), "-ERR down\r\n", 'mock: set_rules');

is_deeply([ map { $_->{name} } $mock->commands ],
          [ qw(PING GET PING SLOW HANG PING SHUT GARB ONCE ONCE PING) ],
          'mock: commands recorded');
is_deeply(($mock->commands('get'))[0]{cmd}, [ 'GET', 'k' ],
          'mock: command arguments');

###############################################################################

# nginx and the recording upstream

my $up = $h->upstream;

$h->write_file('html/static.txt', 'static');

$h->start(<<'EOF');
    upstream backend {
        server 127.0.0.1:%%PORT_UPSTREAM%%;
        keepalive 8;
    }

    server {
        listen 127.0.0.1:%%PORT_NGINX%%;

        proxy_http_version 1.1;
        proxy_set_header Connection "";

        location / {
            proxy_pass http://backend;
        }

        location /unbuffered/ {
            proxy_request_buffering off;
            proxy_pass http://backend;
        }

        location /static.txt {
            root %%TESTDIR%%/html;
        }
    }
EOF

my $body = '{"id":"' . join('', map { chr } 0 .. 255) . '"}';
my $r = $h->request(POST => '/hook?x=1', body => $body,
                    headers => { 'X-Sender' => 'a' });

is($r->{status}, 200, 'proxied');
is($r->{body}, '{"ok":true}', 'default upstream body');
is($r->{headers}{'content-type'}, 'application/json', 'response header');

my ($rec) = $up->requests;

is($rec->{body}, $body, 'upstream body byte-identical');
is($rec->{uri}, '/hook?x=1', 'upstream uri');
is($rec->{headers}{'x-sender'}, 'a', 'upstream header, lowercased');
is($rec->{headers}{'content-type'}, 'application/json',
   'default content type');

$r = $h->request(POST => '/', body => 'x',
                 headers => { 'Content-Type' => undef });
ok(!exists(($up->requests)[-1]{headers}{'content-type'}),
   'no content type when undef');

is($h->request(GET => '/?status=201')->{status}, 201, 'status by query');
is($h->request(GET => '/', headers => { 'X-Test-Status' => 500 })->{status},
   500, 'status by header');
is($h->request(GET => '/?close=1')->{status}, 502, 'close: nginx 502');
is($h->request(GET => '/static.txt')->{body}, 'static', 'TESTDIR');

my $n = $up->requests;
$r = $h->request(GET => '/?delay=2', timeout => 0.3);
is($r->{error}, 'timeout', 'client timeout');

# the upstream records it after its 2 s: not among the next tests' requests
ok($up->wait_requests($n + 1, 10) > $n, 'the timed-out request recorded');

# chunked request bodies, buffered and not

$up->clear;

my $big = join '', map { chr(($_ * 7) % 256) } 1 .. 5000;

$r = $h->request(POST => '/unbuffered/', body => $big, chunked => 1,
                 chunk_size => 1000, slow => 0.02);
is($r->{status}, 200, 'chunked request');

$r = $h->request(POST => '/', body => $big, chunked => 1);

my @reqs = $up->requests;

is($reqs[0]{body}, $big, 'chunked body passed chunked');
is($reqs[0]{headers}{'transfer-encoding'}, 'chunked',
   'upstream saw chunked framing');
is($reqs[1]{body}, $big, 'chunked body buffered');
is($reqs[1]{headers}{'content-length'}, 5000, 'buffered: content length');

# concurrency

$up->clear;

# each held in the upstream until all six are there

my @hd = map {
    $h->request_async(POST => '/c/' . ($_ % 2 ? 'odd' : 'even'),
                      body => "{\"n\":$_}",
                      headers => { 'X-Test-Hold' => 'six' })
} 1 .. 6;

ok($up->wait_arrived(6), 'held: six arrived');
is(scalar $up->requests, 0, 'held: none answered');
$up->release('six');

my @res = $h->wait_all(@hd);

is_deeply([ map { $_->{status} } @res ], [ (200) x 6 ], 'async responses');

@reqs = $up->requests;
($max, $by) = NgxHarness::max_concurrency(\@reqs, sub { $_[0]{uri} });

is($max, 3, 'concurrent requests overlap in the upstream');
is_deeply($by, { '/c/odd' => 3, '/c/even' => 3 }, 'overlap per key');

$up->clear;

$h->request(POST => '/s', body => '{}', headers => { 'X-Test-Delay' => 0.05 })
    for 1 .. 3;

is(NgxHarness::max_concurrency([ $up->requests ]), 1,
   'sequential requests do not overlap');

# client abort

$up->clear;

# the client goes while its request is held in the upstream

my $gone = $h->request_async(GET => '/?delay=0.5', timeout => 30,
                             headers => { 'X-Test-Hold' => 'abort' },
                             abort_on => $h->testdir . '/abort');
$up->wait_arrived(1);
$h->write_file('abort', '');
is(($h->wait_all($gone))[0], undef, 'aborted request');
$up->release('abort');

($rec) = $up->wait_requests(1, 10);
ok($rec && $rec->{peer_closed}, 'upstream saw nginx close on client abort');

# reload, config checks, logs

my @workers = $h->worker_pids;
is(scalar @workers, 1, 'one worker');

ok($h->reload, 'reload');
isnt(($h->worker_pids)[0], $workers[0], 'new worker after reload');
is($h->request(GET => '/')->{status}, 200, 'works after reload');

$h->config_fails("bogus_directive on;", qr/unknown directive "bogus_/,
                 'config_fails');
$h->config_ok("server { listen 127.0.0.1:%%PORT_OTHER%%; }", 'config_ok');

$h->error_log_like(qr/\[notice\].*reconfiguring/, 'error_log_like');
$h->no_error_log(qr/\[emerg\]/, 'no_error_log');
like($h->access_log, qr/"POST \/hook\?x=1 HTTP\/1.1" 200/, 'access log');

# fixtures

SKIP: {
    skip 'no fixtures', 2 unless -d $h->fixture_dir;

    my $exp = $h->fixtures_expected;
    is($exp->{'dialog360-text.json'}{format}, 'whatsapp', 'expected.json');
    ok(JSON::PP::decode_json($h->fixture('dialog360-text.json')),
       'fixture');
}

$h->done;

###############################################################################
