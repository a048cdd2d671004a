#!/usr/bin/perl

# webhook_status: after a scripted sequence of outcomes, on two worker
# processes and across a reload, every counter shows exactly what was
# done; the Prometheus text passes a strict line grammar; the JSON parses.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use Digest::SHA qw/hmac_sha256_hex/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream;

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%% timeout=300ms;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_sender from;

    location /a {
        webhook_lock json;
        webhook_lock_name alpha;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /b {
        webhook_lock json;
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /c {
        webhook_lock whatsapp;
        webhook_sender messages[*].from;
        webhook_signature app-secret;
        webhook_dedup 1h;
        webhook_lock_wait 5s;
        webhook_lock_name gamma;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /probe {
        webhook_lock json;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location = /status {
        webhook_status;
    }
}
CONF

$h->start($conf, main => 'worker_processes 2;');

is(scalar(my @w = $h->worker_pids), 2, 'two workers');

sub post {
    my ($uri, $body, %opts) = @_;
    return $h->request(POST => $uri, body => $body, timeout => 5, %opts);
}

# status_json(1) while polling: no test, so that the count is fixed
sub status_json {
    my ($quiet) = @_;
    my $r = $h->request(GET => '/status?format=json');
    is($r->{headers}{'content-type'}, 'application/json', 'JSON type')
        unless $quiet;
    return decode_json($r->{body});
}

sub counts {
    my ($json, $location) = @_;
    my $c = $json->{requests}{$location} or return {};
    return { map { $_ => $c->{$_} } grep { $c->{$_} } keys %$c };
}

###############################################################################

# a scripted sequence

my $n = 0;
sub body { $n++; encode_json({ from => $_[0] // "s$n" }) }

post('/a', body()) for 1 .. 3;                          # 3 acquired
post('/a', '{"id":1}');                                 # bypass
post('/a', 'nope');                                     # invalid
post('/a', body(), headers => { 'Content-Type' => 'text/plain' });
                                                        # invalid (415)

# the first held in the upstream until the two others are answered

my $seen = $up->arrived;
my $first = $h->request_async(POST => '/a?hold=same', body => body('same'));
$up->wait_arrived($seen + 1);
my @r = map { post('/a', body('same')) } 1 .. 2;
$up->release('same');
push @r, $h->wait_all($first);
is(join(',', sort map { $_->{status} } @r), '200,503,503', 'busy twice');

post('/b', body()) for 1 .. 2;                          # b: 2 acquired

$redis->stop;
post('/a', body());                                     # error
post('/b', body()) for 1 .. 2;                          # b: 2 open
$redis->start;

# locking again before going on, counted elsewhere (/probe)
ok($h->wait_for(sub {
    return 1 if counts(status_json(1), '/probe')->{acquired}
                && status_json(1)->{webhook_lock_redis_connected_workers} == 2;
    post('/probe', body());
    return 0;
}, interval => 0.1), 'locking again, both workers connected');
post('/b', body());                                     # b: 3 acquired

my $json = status_json();

is_deeply(counts($json, 'alpha'),
          { acquired => 4, busy => 2, bypass => 1, invalid => 2, error => 1 },
          'alpha: every outcome counted once, across both workers');
is_deeply(counts($json, '/b'), { acquired => 3, open => 2 },
          '/b (named after its location): acquired and open');

# the last release follows its response by a moment
ok($h->wait_for(sub {
    $json = status_json(1);
    !$json->{webhook_lock_locks_held};
}), 'the last release came');

is($json->{webhook_lock_locks_held}, 0, 'no lock held now');
is($json->{webhook_lock_requests_waiting}, 0, 'nobody waiting now');
is($json->{webhook_lock_redis_connected_workers}, 2,
   'both workers connected again');
ok($json->{webhook_lock_redis_reconnects_total} >= 2,
   'both workers reconnected after the restart');
# signatures, dedup and waiting: unsigned, duplicate, waited

sub signed {
    my ($body, %opts) = @_;
    return (body => $body, timeout => 10, %opts, headers => {
        'X-Hub-Signature-256' => 'sha256=' . hmac_sha256_hex($body,
                                                             'app-secret') });
}

# 360dialog's flat WhatsApp body
sub wa { encode_json({ messages => [ { from => $_[0], id => $_[1] } ] }) }

my $m1 = wa('carol', 'm1');

is(post('/c', $m1, headers => { 'X-Hub-Signature-256' => 'sha256=00' })
   ->{status}, 401, 'unsigned');
is($h->request(POST => '/c', signed($m1))->{status}, 200, 'acquired');
is($h->request(POST => '/c', signed($m1))->{body}, '{"status":"duplicate"}',
   'duplicate');

# the first held in the upstream until the second waits

$seen = $up->arrived;
my @hd = ($h->request_async(POST => '/c?delay=0.4&hold=dan',
                            signed(wa('dan', 'd1'))));
$up->wait_arrived($seen + 1);
push @hd, $h->request_async(POST => '/c', signed(wa('dan', 'd2')));
ok($h->wait_for(sub { status_json(1)->{webhook_lock_requests_waiting} }),
   'the second waits');
$up->release('dan');
@r = $h->wait_all(@hd);
is(join(',', map { $_->{status} } @r), '200,200', 'one acquired, one waited');

$json = status_json();

is_deeply(counts($json, 'gamma'),
          { acquired => 2, waited => 1, duplicate => 1, unsigned => 1 },
          'gamma: unsigned, duplicate and waited counted too');

my $wait = $json->{webhook_lock_wait_seconds};
ok($wait->{count} >= 3, 'the waits are observed');
ok($wait->{sum} >= 0.2, 'and the one that waited shows in the sum');

my $attempts = 0;
for my $c (values %{ $json->{requests} }) {
    $attempts += $c->{$_} for qw/acquired waited duplicate busy error open/;
}

my $hist = $json->{webhook_lock_redis_duration_seconds};
is($hist->{count}, $attempts, 'one observation per lock attempt');
is($hist->{buckets}{'+Inf'}, $hist->{count}, '+Inf bucket is the count');

# Redis commands: each single-sender lock is one acquire and one release

my $before = status_json()->{webhook_lock_redis_commands_total};
post('/a', body()) for 1 .. 5;
ok($h->wait_for(sub {
    status_json(1)->{webhook_lock_redis_commands_total} - $before >= 10
}), 'ten commands counted');
is(status_json()->{webhook_lock_redis_commands_total} - $before, 10,
   'five locks: ten commands');

# a lock held shows in the gauge while its request is in the upstream

$seen = $up->arrived;
my $slow = $h->request_async(POST => '/a?hold=slow', body => body());
$up->wait_arrived($seen + 1);
$json = status_json();
is($json->{webhook_lock_locks_held}, 1, 'one lock held during a request');
$up->release('slow');
$h->wait_all($slow);

###############################################################################

# across a reload the counters go on

my $acquired = counts(status_json(), 'alpha')->{acquired};
ok($h->reload($conf), 'reloaded');
post('/a', body());
is(counts(status_json(), 'alpha')->{acquired}, $acquired + 1,
   'counters survive a reload');

###############################################################################

# the Prometheus text, with a strict line grammar

my $r = $h->request(GET => '/status');
is($r->{status}, 200, 'Prometheus text served');
like($r->{headers}{'content-type'}, qr{^text/plain; version=0\.0\.4},
     'exposition format content type');

my $name = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $label = qr/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\[\\"n])*"/;
my $value = qr/-?(?:\d+(?:\.\d+)?(?:e[+-]?\d+)?|\+Inf|-Inf|NaN)/;

my (%type, %seen, %help, @bad);
my $last_le;

for my $line (split /\n/, $r->{body}) {
    if ($line =~ /^# HELP ($name) \S.*$/) {
        push @bad, "second HELP: $line" if $help{$1}++;

    } elsif ($line =~ /^# TYPE ($name) (counter|gauge|histogram)$/) {
        push @bad, "second TYPE: $line" if $type{$1};
        push @bad, "TYPE after samples: $line" if $seen{$1};
        $type{$1} = $2;

    } elsif ($line =~ /^($name)(\{$label(?:,$label)*\})? ($value)$/) {
        my ($metric, $labels) = ($1, $2 // '');
        my $family = $metric;
        $family =~ s/_(bucket|sum|count)$// unless $type{$metric};
        my $t = $type{$family};

        push @bad, "sample without TYPE: $line" unless $t;
        push @bad, "counter not ending in _total: $line"
            if ($t // '') eq 'counter' && $metric !~ /_total$/;
        push @bad, "duplicate series: $line" if $seen{"$metric$labels"}++;
        $seen{$family}++;

        if (($t // '') eq 'histogram' && $metric =~ /_bucket$/) {
            my ($le) = $labels =~ /le="([^"]+)"/;
            push @bad, "bucket without le: $line" unless defined $le;
            $last_le = undef if $le eq '0.001';
            push @bad, "buckets out of order: $line"
                if defined $last_le && $le ne '+Inf' && $le <= $last_le;
            $last_le = $le eq '+Inf' ? undef : $le;
        }

    } else {
        push @bad, "not in the grammar: $line";
    }
}

is_deeply(\@bad, [], 'every line is in the exposition grammar')
    or diag explain \@bad;
is(scalar(grep { $type{$_} eq 'histogram' } keys %type), 2,
   'two histograms');
like($r->{body}, qr/^webhook_lock_requests_total\{location="alpha",status="acquired"\} \d+$/m,
     'per-location counter present');

ok(eval { decode_json($h->request(GET => '/status?format=json')->{body}) },
   'the JSON output parses');

is($h->request(POST => '/status', body => '{}')->{status}, 405,
   'the status page only answers GET');

$h->done;
