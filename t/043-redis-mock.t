#!/usr/bin/perl

# Faults a real Redis cannot show, from a scripted RESP server: a slow
# answer, no answer, garbage, a dropped connection, an error reply.  The
# command timeout and the failure policy apply, nothing hangs, and a plain
# location of the same nginx keeps answering at once meanwhile.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy/]);
my $mock = $h->mock_redis(rules => []);
my $up = $h->upstream;

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_MOCK_REDIS%% timeout=400ms;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_sender from;
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

    location /plain {
        return 200 "plain\n";
    }

    location = /status {
        webhook_status;
    }
}
CONF

my $n = 0;

sub post {
    my ($uri) = @_;

    $n++;
    return $h->request(POST => $uri, body => encode_json({ from => "s$n" }),
                       timeout => 5);
}

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

# wait until the worker is connected again and locking works
sub healthy {
    return $h->wait_for(sub { (post('/closed')->{status} // 0) == 200 },
                        interval => 0.1);
}

ok(healthy(), 'connected to the scripted server');
my @cmds = map { $_->{cmd}[0] } $mock->commands;
ok(grep({ uc $_ eq 'SET' } @cmds), 'a lock is a SET')
    or diag explain \@cmds;
ok(!grep({ uc $_ eq 'DEL' } @cmds), 'no plain DEL is ever sent');

# a slow answer: the timeout applies, plain requests are not held up

$mock->set_rules([ [ 'SET' => { delay => 4, reply => '+OK' } ] ]);

my $sets = () = $mock->commands('SET');

my $t = time;
my $slow = $h->request_async(POST => '/closed', timeout => 10,
                             body => encode_json({ from => 'slow' }));

# once the SET is in the scripted server

$h->wait_for(sub { $mock->commands('SET') > $sets });

my $t1 = time;
my $plain = $h->request(GET => '/plain');
my $plain_time = time - $t1;
is($plain->{status}, 200, 'a plain location answers while Redis is slow');
ok(!$h->done_async($slow), sprintf('at once, while the lock waits for '
                                   . 'Redis (%.3f s)', $plain_time));

my ($r) = $h->wait_all($slow);
my $elapsed = time - $t;
is($r->{status}, 503, 'slow Redis: 503');
is(error_of($r), 'lock_unavailable', 'lock_unavailable');
ok($elapsed >= 0.35 && $elapsed < 3,
   sprintf('after the 400ms timeout, not the 4 s answer (%.3f s)',
           $elapsed));
$h->error_log_like(qr/redis .*tim(ed|e) ?out/i, 'the timeout is logged');

$mock->set_rules([]);
ok(healthy(), 'back to normal after a slow answer');

my $stats = decode_json($h->request(GET => '/status?format=json')->{body});
is($stats->{webhook_lock_redis_timeouts_total}, 1, 'the timeout counted');
ok($stats->{webhook_lock_redis_errors_total} >= 1,
   'and the command it failed');
is($stats->{webhook_lock_redis_reconnects_total}, 1,
   'and the reconnect that followed');

# no answer at all, fail closed and fail open

$mock->set_rules([ [ 'SET' => { hang => 1 } ] ]);

$t = time;
$r = post('/closed');
is($r->{status}, 503, 'silent Redis, fail closed: 503');
ok(time - $t < 3, 'no request hangs past the timeout (400ms)');

$mock->set_rules([ [ 'SET' => { hang => 1 } ] ]);
$up->clear;
$r = post('/open');
is($r->{status}, 200, 'silent Redis, fail open: forwarded');
is(($up->requests)[0]{headers}{'x-lock'}, 'open', 'status open');

$mock->set_rules([]);
ok(healthy(), 'back to normal after silence');

# garbage, a dropped connection, an error reply

for my $fault ([ garbage => { garbage => 1 } ],
               [ 'dropped connection' => { close => 1 } ],
               [ 'error reply' => { reply => '-ERR something broke' } ])
{
    my ($name, $rule) = @$fault;

    $mock->set_rules([ [ 'SET' => $rule ] ]);
    $r = post('/closed');
    is($r->{status}, 503, "$name: 503");
    is(error_of($r), 'lock_unavailable', "$name: lock_unavailable");

    $mock->set_rules([]);
    ok(healthy(), "back to normal after $name");
}

$stats = decode_json($h->request(GET => '/status?format=json')->{body});
ok($stats->{webhook_lock_redis_errors_total} >= 4,
   'garbage, a dropped connection and an error reply counted as errors');

# a held key (nil from SET NX) is busy, not an error

$mock->set_rules([ [ 'SET' => { reply => '$-1' } ] ]);
$r = post('/closed');
is($r->{status}, 503, 'nil reply: 503');
is(error_of($r), 'sender_busy', 'nil reply means busy');

$mock->set_rules([]);

$h->done;
