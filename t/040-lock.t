#!/usr/bin/perl

# The lock: one request per (inbox, sender) in the upstream at a time, the
# others answered 503 with Retry-After; different senders never wait for
# each other; a body with several senders holds all their keys or none.

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
my $up = $h->upstream(delay => 0.5);

$h->start(<<'CONF');
# room for a loaded machine: a setup timed out would load the scripts
# twice, and they are counted
webhook_redis 127.0.0.1:%%PORT_REDIS%% connect_timeout=10s timeout=10s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock        json;
        webhook_sender      msgs[*].from from;
        webhook_message_id  msgs[*].id id;
        webhook_inbox       inbox;
        webhook_retry_after 2;
        webhook_lock_ttl    10s;

        proxy_set_header X-Sender $webhook_senders;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_set_header X-Key $webhook_lock_key;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

sub post {
    my ($body, %opts) = @_;
    return $h->request_async(POST => '/hook', body => encode_json($body),
                             %opts);
}

sub sender_of { $_[0]{headers}{'x-sender'} }

# the upstream records a request when it answers: watch Redis instead
sub wait_key {
    my ($key) = @_;
    return $h->wait_for(sub { $redis->cmd('EXISTS', $key) });
}

# held in the upstream until released (X-Test-Hold)
sub held { (headers => { 'X-Test-Hold' => $_[0] }) }

# until $n of these requests are answered
sub answered {
    my ($n, @hd) = @_;
    return $h->wait_for(sub { grep({ $h->done_async($_) } @hd) >= $n });
}

###############################################################################

# six webhooks of one sender at once: one goes in, five get 503

# the one that goes in is held there until the five others are answered

my @hd = map { post({ inbox => 'i1', from => 'alice', id => "m$_" },
                    held('six')) } 1 .. 6;
answered(5, @hd);
$up->release('six');
my @res = $h->wait_all(@hd);

my @ok = grep { $_->{status} == 200 } @res;
my @busy = grep { $_->{status} == 503 } @res;

is(scalar @ok, 1, 'one of six forwarded');
is(scalar @busy, 5, 'five answered 503');

for my $r (@busy) {
    is($r->{headers}{'retry-after'}, '2', 'Retry-After: 2');
    is($r->{headers}{'content-type'}, 'application/json', '503 is JSON');
    is_deeply(decode_json($r->{body}),
              { error => 'sender_busy', retry_after => 2 },
              '503 body says sender_busy');
}

is(scalar $up->requests, 1, 'the upstream saw one request');
$h->error_log_like(qr/\[error\].*webhook sender busy, key "webhook:\{i1\}:alice"/,
                   'held-back request logged at the default level');

# a provider redelivering until all six got through: never two at once

$up->clear;

my %pending = map { $_ => 1 } 1 .. 6;

for my $round (1 .. 30) {
    last unless %pending;

    my @ids = sort keys %pending;
    my @r = $h->wait_all(map { post({ inbox => 'i1', from => 'bob',
                                      id => "m$_" }) } @ids);

    for my $i (0 .. $#ids) {
        delete $pending{ $ids[$i] } if $r[$i]{status} == 200;
    }
}

is(scalar keys %pending, 0, 'every redelivered webhook got through');
is(scalar $up->requests, 6, 'each exactly once in the upstream');
is(NgxHarness::max_concurrency([ $up->requests ], \&sender_of), 1,
   'never two requests of one sender in the upstream at once');

###############################################################################

# different senders do not block each other

$up->clear;

# each held in the upstream until all five are there

@hd = map { post({ inbox => 'i1', from => "carol$_", id => "m$_" },
                 held('five')) } 1 .. 5;
$up->wait_arrived(5);
$up->release('five');
@res = $h->wait_all(@hd);

is(scalar(grep { $_->{status} == 200 } @res), 5,
   'five senders at once: all forwarded');
is(NgxHarness::max_concurrency([ $up->requests ]), 5,
   'and all five were in the upstream together');

# the same sender in another inbox is another lock

$up->clear;

@hd = (post({ inbox => 'i1', from => 'dave', id => 'x' }, held('dave')),
       post({ inbox => 'i2', from => 'dave', id => 'y' }, held('dave')));
$up->wait_arrived(2);
$up->release('dave');
@res = $h->wait_all(@hd);

is(scalar(grep { $_->{status} == 200 } @res), 2,
   'one sender in two inboxes: both forwarded');

###############################################################################

# a lock as Redis holds it

$up->clear;

my $h1 = post({ inbox => 'i3', from => 'erin', id => 'e1' });
wait_key('webhook:{i3}:erin');

my $token = $redis->cmd('GET', 'webhook:{i3}:erin');
like($token // '', qr/^[0-9a-f]{32}$/, 'the value is a 128-bit hex token');
my $pttl = $redis->cmd('PTTL', 'webhook:{i3}:erin');
ok($pttl > 8000 && $pttl <= 10000, "expiry is webhook_lock_ttl ($pttl ms)");

my ($r1) = $h->wait_all($h1);
is($r1->{status}, 200, 'the holder was forwarded');

# the holder's key goes just after its answer: wait for another value

my $h2 = post({ inbox => 'i3', from => 'erin', id => 'e2' });
my $token2;
$h->wait_for(sub {
    $token2 = $redis->cmd('GET', 'webhook:{i3}:erin');
    defined $token2 && $token2 ne $token;
});
isnt($token2, $token, 'each request has a fresh token');
$h->wait_all($h2);

###############################################################################

# several senders in one body: all keys or none

$up->clear;

my $both = { inbox => 'i4', msgs => [ { from => 'fay', id => 'f1' },
                                      { from => 'gus', id => 'g1' },
                                      { from => 'fay', id => 'f2' } ] };

my $hb = post($both, held('both'));
wait_key('webhook:{i4}:fay');

ok($redis->cmd('EXISTS', 'webhook:{i4}:fay', 'webhook:{i4}:gus') == 2,
   'both keys held while the body is in the upstream');

my $r = $h->request(POST => '/hook', body => encode_json({ inbox => 'i4',
                    from => 'gus', id => 'g2' }));
is($r->{status}, 503, 'one of the two senders alone is busy');

$up->release('both');
($r) = $h->wait_all($hb);
is($r->{status}, 200, 'the two-sender body was forwarded');

my ($req) = $up->requests;
is($req->{headers}{'x-sender'}, 'fay,gus', 'two distinct senders');
is($req->{headers}{'x-key'}, 'webhook:{i4}:fay,webhook:{i4}:gus',
   'one key per sender');

# one of the keys already held by someone else: none is taken

$redis->cmd('SET', 'webhook:{i4}:gus', 'someone-else', 'PX', 5000);

$r = $h->request(POST => '/hook', body => encode_json($both));
is($r->{status}, 503, 'two-sender body with one key held: 503');
is($redis->cmd('EXISTS', 'webhook:{i4}:fay'), 0,
   'the free key was not taken (no partial hold)');
is($redis->cmd('GET', 'webhook:{i4}:gus'), 'someone-else',
   'the held key was left alone');

$redis->cmd('DEL', 'webhook:{i4}:gus');

# two bodies with the same two senders in opposite orders, at once, twice
# over: never a deadlock, always one forwarded

$up->clear;

for my $round (1 .. 2) {

    # the one that goes in is held there until the other is answered

    @hd = (post({ inbox => 'i5', msgs => [ { from => 'hal', id => 'a' },
                                           { from => 'ivy', id => 'b' } ] },
                held("cross$round")),
           post({ inbox => 'i5', msgs => [ { from => 'ivy', id => 'c' },
                                           { from => 'hal', id => 'd' } ] },
                held("cross$round")));
    answered(1, @hd);
    $up->release("cross$round");
    @res = $h->wait_all(@hd);

    is(join(',', sort map { $_->{status} } @res), '200,503',
       'crossed two-sender bodies: one in, one 503');
}

is_deeply($redis->settled_keys, [], 'every lock released at the end');

# no location waits: no subscriber, no queue script

is_deeply($redis->cmd('PUBSUB', 'CHANNELS', '*'), [],
          'no subscriber where no location waits');
like($redis->cmd('INFO', 'commandstats'), qr/cmdstat_script\|load:calls=2,/,
     'two scripts loaded, not the queue script');

$h->done;
