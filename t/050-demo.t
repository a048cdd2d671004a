#!/usr/bin/perl

# ./build.sh demo, end to end: the album goes straight to the race-prone
# stand-in (more than one conversation), then through the gate with 503
# and redelivery, then through a location that waits at the edge (each
# time exactly one conversation, every message delivered once, never two
# at once in the app).

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $module = $ENV{TEST_NGINX_MODULE}
             // "$FindBin::Bin/../build/ngx_http_webhook_lock_module.so";

# into a file, not a pipe: a reader of a pipe would also wait for every
# daemon the demo started; two minutes are far more than it needs.  The
# demo runs the nginx of TEST_NGINX_BINARY, as the harness does.
my $file = $h->testdir . '/demo.out';
my $rc = system("timeout 120 perl $FindBin::Bin/demo/album.pl $module "
                . "> $file 2>&1") >> 8;
my $out = $h->read_file('demo.out');

is($rc, 0, 'the demo exits 0') or diag $out;

my ($direct) = $out =~ /straight to the app:\s+\d+ webhooks at once -> (\d+)/;
ok(defined $direct && $direct > 1,
   'straight to the app, the race makes several conversations')
    or diag $out;

like($out, qr/result: 1 conversation, 6 of 6 messages delivered once/,
     'through the gate: one conversation, six messages');
like($out, qr/at most 1 request of\s+this contact in the app at once/,
     'one at a time in the app');
like($out, qr/503 sender_busy, Retry-After: 1/, 'the 503s are shown');
like($out, qr/webhook_lock_wait\ 10s .*? result:\ 1\ conversation,
              \ 6\ of\ 6\ messages\ delivered\ once\ each,
              \s+0\ redelivered,\ at\ most\ 1\ request/xs,
     'waiting at the edge: one conversation, nothing redelivered');
is(scalar(() = $out =~ /after [\d.]+ s at the edge \(waited\)/g), 5,
   'five images waited their turn at the edge');
like($out, qr/the gate held/, 'the verdict is printed');

$h->done;
