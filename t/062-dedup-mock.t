#!/usr/bin/perl

# webhook_dedup on the wire, from a scripted RESP server: the arguments of
# the dedup and settle scripts, what each answer of the dedup script
# becomes, and the "processing" marks undone with the lock when the
# connection goes with an acquire in it or the request goes before the
# answer.

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
webhook_redis 127.0.0.1:%%PORT_MOCK_REDIS%% connect_timeout=10s timeout=10s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_lock        json;
    webhook_sender      from;
    webhook_message_id  ids[*];
    webhook_inbox       inbox;
    webhook_lock_ttl    10s;
    webhook_dedup       1h;

    location /hook {
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

my $n = 0;

sub post {
    my (%opts) = @_;

    $n++;
    return $h->request(POST => '/hook', timeout => 5,
                       body => encode_json({ inbox => 'i', from => "s$n",
                                             ids => [ "a$n", "b$n" ] }),
                       %opts);
}

sub post_async {
    my (%opts) = @_;

    $n++;
    return $h->request_async(POST => '/hook',
                             body => encode_json({ inbox => 'i',
                                                   from => "s$n",
                                                   ids => [ "a$n", "b$n" ] }),
                             %opts);
}

sub json_of { eval { decode_json($_[0]{body}) } // {} }

# the EVALSHA commands naming that sender's key, in order
sub evalshas {
    my ($sender) = @_;
    return map { $_->{cmd} } grep { grep { $_ eq "webhook:{i}:$sender" }
                                    @{ $_->{cmd} } }
                             $mock->commands('EVALSHA');
}

sub wait_evalshas {
    my ($sender, $count) = @_;

    my @c;

    $h->wait_for(sub { @c = evalshas($sender); @c >= $count });

    return @c;
}

sub healthy {
    return $h->wait_for(sub { (post()->{status} // 0) == 200 },
                        interval => 0.1);
}

ok(healthy(), 'connected to the scripted server');

my @loads = grep { uc($_->{cmd}[1] // '') eq 'LOAD' } $mock->commands('SCRIPT');
is(scalar @loads, 4, 'the lock and the dedup scripts are loaded');

###############################################################################

# the arguments: lock keys, then marks; token, how many lock keys, then
# the ttl; for the settle script the done time, then the hold

my $r = post();
is($r->{status}, 200, 'taken (:1): forwarded');

my ($acquire, $release) = wait_evalshas("s$n", 2);
my $token = $acquire->[6] // '';

like($token, qr/^[0-9a-f]{32}$/, 'dedup script: a token');
is_deeply([ @$acquire[2 .. 5], @$acquire[7 .. $#$acquire] ],
          [ 3, "webhook:{i}:s$n", "webhook:dedup:{i}:a$n",
            "webhook:dedup:{i}:b$n", 1, 10000 ],
          'dedup script: 3 keys (the lock, two marks), 1 lock, ttl');
is_deeply([ @{ $release // [] }[2 .. $#$release] ],
          [ 3, "webhook:{i}:s$n", "webhook:dedup:{i}:a$n",
            "webhook:dedup:{i}:b$n", $token, 1, 3600000, 0 ],
          'settle script after a 200: done for 1h, no hold');
isnt($acquire->[1], $release->[1], 'two different scripts');

$r = post(headers => { 'X-Test-Status' => 502 });
($acquire, $release) = wait_evalshas("s$n", 2);
is($release->[-2], 0, 'settle script after a 502: done time 0 (drop)');

# the answers of the dedup script

$mock->set_rules([ [ 'EVALSHA' => { reply => ':3', times => 1 } ] ]);
$up->clear;
$r = post();
is_deeply([ $r->{status}, json_of($r) ], [ 200, { status => 'duplicate' } ],
          ':3 is a duplicate');
is(scalar $up->requests, 0, 'not forwarded');

$mock->set_rules([ [ 'EVALSHA' => { reply => ':2', times => 1 } ] ]);
$r = post();
is_deeply([ $r->{status}, json_of($r) ],
          [ 503, { error => 'duplicate_in_progress', retry_after => 1 } ],
          ':2 is duplicate_in_progress');

$mock->set_rules([ [ 'EVALSHA' => { reply => ':0', times => 1 } ] ]);
$r = post();
is(json_of($r)->{error}, 'sender_busy', ':0 is sender_busy');

is(scalar evalshas("s$n"), 1, 'none of them is released: nothing taken');

###############################################################################

# the connection goes with the acquire in it: undone once Redis is back,
# marks included, and never marked done

$mock->set_rules([ [ 'EVALSHA' => { close => 1, times => 1 } ] ]);
$r = post();
is(json_of($r)->{error}, 'lock_unavailable', 'dropped connection: 503');

my $sender = "s$n";
($acquire, $release) = wait_evalshas($sender, 2);
$token = $acquire->[6] // '';

is_deeply([ @{ $release // [] }[2 .. $#$release] ],
          [ 3, "webhook:{i}:$sender", "webhook:dedup:{i}:a$n",
            "webhook:dedup:{i}:b$n", $token, 1, 0, 0 ],
          'after the reconnect: the settle script drops our marks');

# the request goes while its acquire is pending, which then succeeds

$mock->set_rules([ [ 'EVALSHA' => { delay => 3, reply => ':1',
                                    times => 1 } ] ]);
$up->clear;

my $evalshas = () = $mock->commands('EVALSHA');
my $gone = $h->testdir . '/gone';
my $hd = post_async(abort_on => $gone, timeout => 30);
$h->wait_for(sub { $mock->commands('EVALSHA') > $evalshas });
$h->write_file('gone', '');
$h->wait_all($hd);

($acquire, $release) = wait_evalshas("s$n", 2);

is_deeply([ @{ $release // [] }[2 .. $#$release] ],
          [ 3, "webhook:{i}:s$n", "webhook:dedup:{i}:a$n",
            "webhook:dedup:{i}:b$n", $acquire->[6], 1, 0, 0 ],
          'client gone before the answer: the marks are dropped too');
is(scalar $up->requests, 0, 'and nothing was forwarded');

$mock->set_rules([]);

$h->done;
