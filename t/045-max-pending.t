#!/usr/bin/perl

# The cap on commands in flight per worker (webhook_redis max_pending=):
# past it a request does not queue behind a slow Redis, it gets the
# failure policy at once.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy/]);
my $mock = $h->mock_redis(rules => []);
my $up = $h->upstream;

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_MOCK_REDIS%% timeout=10s max_pending=2;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock json;
        webhook_sender from;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

# connected: the first lock goes through
$h->wait_for(sub {
    ($h->request(POST => '/hook', body => '{"from":"probe"}')->{status}
     // 0) == 200
}, interval => 0.1);

# the scripted server answers each SET after 3 s, one after the other:
# once it has the first, the three others come while it waits

$mock->set_rules([ [ 'SET' => { delay => 3, reply => '+OK' } ] ]);

my $sets = () = $mock->commands('SET');

sub post {
    $h->request_async(POST => '/hook', body => encode_json({ from => $_[0] }),
                      timeout => 15);
}

my @hd = (post('s1'));
$h->wait_for(sub { $mock->commands('SET') > $sets });
push @hd, map { post("s$_") } 2 .. 4;

my @r = $h->wait_all(@hd);

my @ok = grep { $_->{status} == 200 } @r;
my @refused = grep { $_->{status} == 503 } @r;

is(scalar @ok, 2, 'two commands in flight: their requests were locked');
is(scalar @refused, 2, 'the other two got 503');
is((eval { decode_json($refused[0]{body}) } // {})->{error},
   'lock_unavailable', 'as lock_unavailable');
$h->error_log_like(qr/2 commands pending, max_pending reached/,
                   'the cap is logged');

$h->done;
