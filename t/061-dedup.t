#!/usr/bin/perl

# webhook_dedup, two-phase: a message id is marked "processing" with the
# lock and "done" only once the client got a 2xx.  A redelivery of a done
# message is answered 200 duplicate without the upstream; one of a message
# still in the upstream gets 503 duplicate_in_progress; one of a message
# that failed (500, 502) goes through again, and so does one of a message
# whose request ended before the app answered (504, client gone), once
# the lock and the mark it left have expired.  Dedup costs no Redis round
# trip of its own.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Encode qw/decode_utf8/;
use Digest::SHA qw/sha256_hex/;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream;
my $expected = $h->fixtures_expected;

my $fixtures = '';

for my $format (qw/whatsapp instagram messenger tiktok twilio telegram line
                    sms/)
{
    $fixtures .= <<"CONF";
    location /$format/ {
        webhook_lock $format;
        proxy_set_header X-Lock \$webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
CONF
}

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format dedup '\$http_x_seq \$request_uri \$status \$webhook_lock_status';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/dedup.log dedup;

    webhook_lock        json;
    webhook_sender      msgs[*].from from;
    webhook_message_id  msgs[*].id id;
    webhook_inbox       inbox;
    webhook_lock_ttl    10s;
    webhook_retry_after 2;
    webhook_dedup       1h;

    proxy_set_header X-Lock \$webhook_lock_status;
    proxy_read_timeout 5s;

    location /hook {
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /timeout {
        webhook_lock_ttl 3s;
        proxy_read_timeout 300ms;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /gone {
        webhook_lock_ttl 3s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /down {
        proxy_pass http://127.0.0.1:%%PORT_NOTHING%%;
    }

    location /short {
        webhook_dedup 3s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /plain {
        webhook_dedup off;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /open {
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}

server {
    listen 127.0.0.1:%%PORT_FIXTURES%%;

    webhook_dedup 24h;

$fixtures
}
CONF

# each request is numbered, to find its line in the access log
my $seq = 0;

sub post {
    my ($uri, $body, %opts) = @_;
    return $h->request(POST => $uri, body => encode_json($body),
                       headers => { 'X-Seq' => ++$seq }, %opts);
}

sub post_async {
    my ($uri, $body, %opts) = @_;
    return $h->request_async(POST => $uri, body => encode_json($body),
                             headers => { 'X-Seq' => ++$seq }, %opts);
}

sub mark { "webhook:dedup:{$_[0]}:$_[1]" }

sub wait_for {
    my ($cond, $name) = @_;
    ok($h->wait_for($cond), $name);
}

sub done_soon {
    my ($key, $name) = @_;
    wait_for(sub { ($redis->cmd('GET', $key) // '') eq 'done' }, $name);
}

sub gone_soon {
    my ($key, $name) = @_;
    wait_for(sub { !$redis->cmd('EXISTS', $key) }, $name);
}

# "URI STATUS LOCK-STATUS" of the request sent last, from the access log:
# it is written once the answer is out, so wait for it
sub logged {
    my $l;

    $h->wait_for(sub {
        ($l) = grep { s/^$seq // } split /\n/, $h->read_file('dedup.log');
        defined $l;
    });

    return $l // '';
}

# how many requests carrying that message id the upstream saw (to that
# URI only, if given)
sub seen {
    my ($id, $uri) = @_;

    return scalar grep {
        my $b = eval { decode_json($_->{body}) } // {};
        (!defined $uri || $_->{uri} eq $uri)
        && grep { defined && $_ eq $id } $b->{id}, map { $_->{id} }
                                                   @{ $b->{msgs} // [] }
    } $up->requests;
}

sub json_of { eval { decode_json($_[0]{body}) } // {} }

my ($r, $pttl, $token);

###############################################################################

# a message processed: done for webhook_dedup, the redelivery answered here

$r = post('/hook', { inbox => 'i1', from => 'alice', id => 'm1' });
is($r->{status}, 200, 'first delivery forwarded');
done_soon(mark('i1', 'm1'), 'its id is marked done after the 2xx');

$pttl = $redis->cmd('PTTL', mark('i1', 'm1'));
ok($pttl > 3_590_000 && $pttl <= 3_600_000,
   "the done mark lives webhook_dedup, 1h ($pttl ms)");
gone_soon('webhook:{i1}:alice', 'the lock is released as usual');

$r = post('/hook', { inbox => 'i1', from => 'alice', id => 'm1' });
is($r->{status}, 200, 'redelivery: 200');
is($r->{headers}{'content-type'}, 'application/json', 'redelivery: JSON');
is_deeply(json_of($r), { status => 'duplicate' },
          'redelivery: {"status":"duplicate"}');
ok(!exists $r->{headers}{'retry-after'}, 'no Retry-After on a duplicate');
is(logged(), '/hook 200 duplicate',
   '$webhook_lock_status is duplicate');
is(seen('m1'), 1, 'the upstream saw the message once');
is($redis->cmd('EXISTS', 'webhook:{i1}:alice'), 0,
   'a duplicate leaves no lock held');

# a duplicate does not wait for a lock held by another message

$redis->cmd('SET', 'webhook:{i1}:alice', 'someone-else', 'PX', 5000);
$r = post('/hook', { inbox => 'i1', from => 'alice', id => 'm1' });
is_deeply([ $r->{status}, json_of($r) ], [ 200, { status => 'duplicate' } ],
          'a done message is a duplicate even while its sender is locked');
is($redis->cmd('GET', 'webhook:{i1}:alice'), 'someone-else',
   'and the other lock is left alone');
$redis->cmd('DEL', 'webhook:{i1}:alice');

###############################################################################

# a redelivery while the first delivery is still in the upstream

# held in the upstream (?hold=) until the redeliveries are answered

my $first = post_async('/hook?hold=m2',
                       { inbox => 'i2', from => 'bob', id => 'm2' });
wait_for(sub { $redis->cmd('EXISTS', mark('i2', 'm2')) },
         'the id is marked while its request is in the upstream');

$token = $redis->cmd('GET', 'webhook:{i2}:bob');
like($token // '', qr/^[0-9a-f]{32}$/, 'the lock is held');
is($redis->cmd('GET', mark('i2', 'm2')), $token,
   'the processing mark holds the request\'s token');
$pttl = $redis->cmd('PTTL', mark('i2', 'm2'));
ok($pttl > 8000 && $pttl <= 10000,
   "the processing mark expires as the lock, webhook_lock_ttl ($pttl ms)");

$r = post('/hook', { inbox => 'i2', from => 'bob', id => 'm2' });
is($r->{status}, 503, 'redelivery in progress: 503');
is($r->{headers}{'retry-after'}, '2', 'with Retry-After');
is($r->{headers}{'content-type'}, 'application/json', 'JSON');
is_deeply(json_of($r), { error => 'duplicate_in_progress', retry_after => 2 },
          '{"error":"duplicate_in_progress","retry_after":2}');
is(logged(), '/hook 503 busy', '$webhook_lock_status is busy');

$r = post('/hook', { inbox => 'i2', from => 'cleo', id => 'm2' });
is(json_of($r)->{error}, 'duplicate_in_progress',
   'the same id from another sender: in progress too');
is($redis->cmd('EXISTS', 'webhook:{i2}:cleo'), 0,
   'and that sender was not locked');

$r = post('/hook', { inbox => 'i2', from => 'bob', id => 'm2b' });
is(json_of($r)->{error}, 'sender_busy',
   'another message of the busy sender: sender_busy');
is($redis->cmd('EXISTS', mark('i2', 'm2b')), 0,
   'and its id was not marked');

$up->release('m2');
($r) = $h->wait_all($first);
is($r->{status}, 200, 'the first delivery ended 200');
done_soon(mark('i2', 'm2'), 'then its id is done');

$r = post('/hook', { inbox => 'i2', from => 'bob', id => 'm2' });
is(json_of($r)->{status}, 'duplicate', 'a later redelivery: duplicate');
is(seen('m2'), 1, 'the upstream saw it once');

###############################################################################

# a delivery that failed: its mark goes, the redelivery is processed; one
# that ended before the app answered leaves its lock and its mark to
# expire (the app may still be at work), then the redelivery is processed

my @failures = (
    [ 'upstream 500', '/hook?status=500', 500, 'm3', {} ],
    [ 'upstream down (502)', '/down', 502, 'm4', {} ],
    [ 'upstream timeout (504)', '/timeout?hold=m5', 504, 'm5', {}, 1 ],
    [ 'client gone (499)', '/gone?hold=m6', undef, 'm6', { abort => 1 }, 1 ],
);

for my $case (@failures) {
    my ($name, $uri, $status, $id, $opts, $left) = @$case;
    my $body = { inbox => 'i3', from => "s$id", id => $id };

    if ($opts->{abort}) {

        # the client goes once its request is in the upstream

        my $file = $h->testdir . "/abort-$id";
        my $before = $up->arrived;
        my $hd = post_async($uri, $body, abort_on => $file, timeout => 30);

        $up->wait_arrived($before + 1);
        $h->write_file("abort-$id", '');
        ($r) = $h->wait_all($hd);

    } else {
        $r = post($uri, $body);
    }

    is($r && $r->{status}, $status, "$name: " . ($status // 'no answer'));
    is(logged(), "$uri " . ($status // 499) . ' acquired',
       "$name: logged with its status");

    if ($left) {
        like($redis->cmd('GET', mark('i3', $id)) // '', qr/^[0-9a-f]{32}\z/,
             "$name: the processing mark stays");
        ok($redis->cmd('EXISTS', "webhook:{i3}:s$id"),
           "$name: the lock stays");

        $r = post('/hook', $body);
        is(json_of($r)->{error}, 'duplicate_in_progress',
           "$name: a redelivery meanwhile is held back");

        $h->wait_for(sub { !$redis->cmd('EXISTS', "webhook:{i3}:s$id") });
    }

    gone_soon(mark('i3', $id), "$name: the processing mark is dropped"
                               . ($left ? ' (expired)' : ''));
    gone_soon("webhook:{i3}:s$id", "$name: the lock is released"
                                   . ($left ? ' (expired)' : ''));
    $up->release($id);

    $r = post('/hook', $body);
    is($r->{status}, 200, "$name: the redelivery is forwarded");
    is(logged(), '/hook 200 acquired',
       "$name: the redelivery locked, not a duplicate");
    is(seen($id, '/hook'), 1, "$name: the upstream got the redelivery");
    done_soon(mark('i3', $id), "$name: done once the redelivery succeeded");
}

###############################################################################

# a body mixing a done id and a new one is forwarded; only the new id is
# marked

my $mixed = { inbox => 'i1', msgs => [ { from => 'dora', id => 'm1' },
                                       { from => 'dora', id => 'm7' } ] };
my $old = $redis->cmd('PTTL', mark('i1', 'm1'));

my $hm = post_async('/hook?hold=m7', $mixed);
wait_for(sub { $redis->cmd('EXISTS', mark('i1', 'm7')) },
         'mixed body: the new id is marked');
is($redis->cmd('GET', mark('i1', 'm7')),
   $redis->cmd('GET', 'webhook:{i1}:dora'),
   'mixed body: the new id holds the request\'s token');
is($redis->cmd('GET', mark('i1', 'm1')), 'done',
   'mixed body: the done id stays done');

$up->release('m7');
($r) = $h->wait_all($hm);
is($r->{status}, 200, 'mixed body: forwarded');
done_soon(mark('i1', 'm7'), 'mixed body: the new id is done');
ok($redis->cmd('PTTL', mark('i1', 'm1')) <= $old,
   'mixed body: the old done mark was not renewed');

$r = post('/hook', $mixed);
is(json_of($r)->{status}, 'duplicate', 'mixed body again: duplicate now');
is(seen('m7'), 1, 'mixed body: the upstream saw it once');

###############################################################################

# the done mark expires after webhook_dedup; the message is new again then

$r = post('/short', { inbox => 'i4', from => 'eve', id => 'm8' });
is($r->{status}, 200, 'webhook_dedup 3s: forwarded');
done_soon(mark('i4', 'm8'), 'webhook_dedup 3s: done');
$pttl = $redis->cmd('PTTL', mark('i4', 'm8'));
ok($pttl > 0 && $pttl <= 3000, "webhook_dedup 3s: PTTL $pttl ms");

$r = post('/short', { inbox => 'i4', from => 'eve', id => 'm8' });
is(json_of($r)->{status}, 'duplicate', 'webhook_dedup 3s: duplicate at once');

gone_soon(mark('i4', 'm8'), 'webhook_dedup 3s: the mark expires');

$r = post('/short', { inbox => 'i4', from => 'eve', id => 'm8' });
is(logged(), '/short 200 acquired',
   'webhook_dedup 3s: forwarded again once the mark expired');

###############################################################################

# ids are arguments, never script text: quotes, brackets, Lua comment
# marks, braces and UTF-8 go through as they are (control characters do
# not: a 400, see t/072-limits.t)

my $odd = "x' \"]] -- ]=] {}:* \\ \xc3\xa9 end)";
my $odd_key = "webhook:dedup:{i5}:$odd";

$r = post('/hook', { inbox => 'i5', from => 'fay', id => decode_utf8($odd) });
is($r->{status}, 200, 'odd id: forwarded');
done_soon($odd_key, 'odd id: marked done under its exact bytes');

$r = post('/hook', { inbox => 'i5', from => 'fay', id => decode_utf8($odd) });
is(json_of($r)->{status}, 'duplicate', 'odd id: redelivery is a duplicate');

###############################################################################

# dedup applies to locked bodies only: no sender, no lock, no dedup

for (1 .. 2) {
    $r = post('/hook', { inbox => 'i6', id => 'm9' });
    is($r->{status}, 200, "no sender ($_): forwarded");
    is(logged(), '/hook 200 bypass', "no sender ($_): bypass");
}

is($redis->cmd('EXISTS', mark('i6', 'm9')), 0, 'no sender: no mark');

# webhook_dedup off: the same message twice goes through twice

for (1 .. 2) {
    $r = post('/plain', { inbox => 'i7', from => 'gil', id => 'm10' });
    is(logged(), '/plain 200 acquired', "dedup off ($_): forwarded");
    gone_soon('webhook:{i7}:gil', "dedup off ($_): released");
}

is($redis->cmd('EXISTS', mark('i7', 'm10')), 0, 'dedup off: no mark');

###############################################################################

# round trips: one before proxying, one after, with dedup as without it

sub cmdstats {
    my $info = $redis->cmd('INFO', 'commandstats');
    my %c;
    $c{$1} = $2 while $info =~ /^cmdstat_([\w|]+):calls=(\d+)/mg;
    return \%c;
}

sub delta {
    my ($before, $after, $cmd) = @_;
    return ($after->{$cmd} // 0) - ($before->{$cmd} // 0);
}

# MONITOR shows commands from scripts as "[0 lua]": the rest are round
# trips; those of the test's own connection are left out

my ($me) = $redis->cmd('CLIENT', 'INFO') =~ /\baddr=(\S+)/;

sub monitor {
    my $m = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $redis->port, Timeout => 2)
        or die "monitor: $!";
    print $m "MONITOR\r\n";
    my $ok = <$m>;
    return $m;
}

sub monitored {
    my ($m) = @_;

    my ($buf, @cmds) = ('');
    my $sel = IO::Select->new($m);

    while ($sel->can_read(0.3)) {
        last unless sysread($m, $buf, 65536, length $buf);
    }

    close $m;

    for my $line (split /\r\n/, $buf) {
        next unless $line =~ /^\+[\d.]+\ \[\d+\ ([^\]]+)\]
                               \ "(\w+)"(?:\ "[^"]*"\ "(\d+)")?/x;
        next if $1 eq 'lua' || $1 eq $me;
        push @cmds, uc($2) . (uc($2) eq 'EVALSHA' ? " $3" : '');
    }

    return @cmds;
}

my $n = 5;

wait_for(sub { !grep { !/^webhook:dedup:/ } @{ $redis->cmd('KEYS', '*') } },
         'no lock left before counting');

my $m = monitor();
my $before = cmdstats();

for my $i (1 .. $n) {
    $r = post('/hook', { inbox => 'i8', from => "rt$i", id => "rt$i" });
    done_soon(mark('i8', "rt$i"), "dedup request $i: done");
}

my $after = cmdstats();
my @cmds = monitored($m);

is(delta($before, $after, 'evalsha'), 2 * $n,
   "dedup: $n requests, 2 EVALSHA each (commandstats)");
is(delta($before, $after, 'eval'), 0, 'dedup: no EVAL');
is_deeply(\@cmds, [ ('EVALSHA 2') x (2 * $n) ],
          'dedup: nothing else from nginx, each script given the lock key '
          . 'and the mark') or diag explain \@cmds;

$m = monitor();
$before = cmdstats();

for my $i (1 .. $n) {
    $r = post('/plain', { inbox => 'i8', from => "pl$i", id => "pl$i" });
    gone_soon("webhook:{i8}:pl$i", "plain request $i: released");
}

$after = cmdstats();
@cmds = monitored($m);

is(delta($before, $after, 'set'), $n, "dedup off: $n SET");
is(delta($before, $after, 'evalsha'), $n, "dedup off: $n EVALSHA");
is_deeply(\@cmds, [ ('SET', 'EVALSHA 1') x $n ],
          'dedup off: SET NX PX then the release script, as before')
    or diag explain \@cmds;

###############################################################################

# the real payloads dedup by their own message ids

for my $file (sort keys %$expected) {
    my $e = $expected->{$file};
    next if $e->{bypass} || !@{ $e->{message_ids} };

    my $form = $file =~ /\.form\.txt$/;
    my $uri = "/$e->{format}/12345678911";
    my $inbox = $e->{inbox} // $uri;
    my $body = $h->fixture($file);

    # Telegram's URI ends with the bot token, which the inbox hashes
    $inbox =~ s{([^/]*)$}{'sha256-' . substr(sha256_hex($1), 0, 32)}e
        if $e->{format} eq 'telegram';
    my %opts = (port => 'fixtures', body => $body,
                headers => { 'Content-Type' => $form
                             ? 'application/x-www-form-urlencoded'
                             : 'application/json' });

    # fixtures share ids: each starts afresh
    $redis->cmd('DEL', map { mark($inbox, $_) } @{ $e->{message_ids} });
    $up->clear;

    $r = $h->request(POST => $uri, %opts);
    is($r->{status}, 200, "$file: forwarded");

    done_soon(mark($inbox, $_), "$file: $_ done") for @{ $e->{message_ids} };

    $r = $h->request(POST => $uri, %opts);
    is_deeply([ $r->{status}, json_of($r) ], [ 200, { status => 'duplicate' } ],
              "$file: redelivery is a duplicate");
    is(scalar $up->requests, 1, "$file: the upstream saw it once");
}

###############################################################################

# after SCRIPT FLUSH both dedup scripts go as EVAL once, then work on

is($redis->cmd('SCRIPT', 'FLUSH'), 'OK', 'SCRIPT FLUSH');

$before = cmdstats();
$r = post('/hook', { inbox => 'i10', from => 'ivy', id => 'm12' });
is($r->{status}, 200, 'after SCRIPT FLUSH: forwarded');
done_soon(mark('i10', 'm12'), 'after SCRIPT FLUSH: done');
$after = cmdstats();
is(delta($before, $after, 'eval'), 2, 'after SCRIPT FLUSH: EVAL, twice');

$r = post('/hook', { inbox => 'i10', from => 'ivy', id => 'm12' });
is(json_of($r)->{status}, 'duplicate', 'after SCRIPT FLUSH: duplicate');

###############################################################################

# Redis away: the lock's failure policy, dedup or not

SKIP: {
    skip 'an external Redis cannot be stopped', 3 unless $redis->can_restart;

    $redis->stop;

    $r = post('/hook', { inbox => 'i9', from => 'hal', id => 'm11' });
    is_deeply([ $r->{status}, json_of($r)->{error} ],
              [ 503, 'lock_unavailable' ], 'Redis down, closed: 503');

    $r = post('/open', { inbox => 'i9', from => 'hal', id => 'm11' });
    is($r->{status}, 200, 'Redis down, open: forwarded');
    is(logged(), '/open 200 open', 'Redis down, open: status open');

    $redis->start;
}

$h->done;
