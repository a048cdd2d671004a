#!/usr/bin/perl

# rediss://: locks through a redis-server that speaks TLS only, with a CA
# and certificates made here.  The server's certificate is checked
# (chain, then name or address), a refusal is logged once with its reason
# and the failure policy applies; a wait woken by the subscriber,
# tls_verify=off, client certificates, AUTH with an ACL user, a restart of
# Redis, a plaintext Redis behind rediss://; a peer that never finishes
# the handshake fails requests after connect_timeout while the worker
# serves others.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use RedisTls;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $pki = RedisTls::pki($h);
my $redis = RedisTls->new($h, pki => $pki);
my $strict = RedisTls->new($h, pki => $pki, name => 'redis_mtls',
                           auth_clients => 'yes');
my $plain = $h->redis;
my $up = $h->upstream;

# a TCP peer that takes the connection and never says a word; it notes
# what it was sent, the ClientHello

my $silent_log = $h->testdir . '/silent.bytes';
my $silent_port = $h->port('silent');

$h->run_daemon(sub {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $silent_port, Listen => 16,
                                  ReuseAddr => 1) or die "listen: $!\n";
    my $sel = IO::Select->new($l);
    my %kept;

    while (1) {
        for my $s ($sel->can_read) {
            if ($s == $l) {
                my $c = $l->accept or next;
                $sel->add($c);
                $kept{fileno $c} = $c;
                next;
            }

            my $n = sysread($s, my $buf, 4096);

            if (!$n) {
                $sel->remove($s);
                delete $kept{fileno $s};
                close $s;
                next;
            }

            open my $fh, '>>', $silent_log or die "$silent_log: $!\n";
            print $fh $buf;
            close $fh;
        }
    }
});

# a handshake takes longer than the TCP connect the default is for,
# under valgrind by far
my $connect_timeout = 2000 * $h->slowness;

sub conf {
    my ($redis_line) = @_;

    $redis_line .= " connect_timeout=${connect_timeout}ms"
        unless $redis_line =~ /connect_timeout=/;

    return <<"CONF";
webhook_redis $redis_line;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    webhook_sender from;
    webhook_retry_after 7;
    proxy_set_header X-Lock \$webhook_lock_status;

    location /closed {
        webhook_lock json;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /open {
        webhook_lock json;
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wait {
        webhook_lock json;
        webhook_lock_wait 10s;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /plain {
        return 200 "plain\\n";
    }

    location = /status {
        webhook_status;
    }
}
CONF
}

my $n = 0;

sub post {
    my ($uri, $from, %opts) = @_;

    $from //= 's' . ++$n;

    return $h->request(POST => $uri, body => encode_json({ from => $from }),
                       timeout => 10 * $h->slowness, %opts);
}

sub post_async {
    my ($uri, $from) = @_;

    return $h->request_async(POST => $uri, timeout => 10 * $h->slowness,
                             body => encode_json({ from => $from }));
}

sub error_of { (eval { decode_json($_[0]{body}) } // {})->{error} // '' }

sub status {
    my $r = $h->request(GET => '/status?format=json', timeout => 5);
    return {} unless ($r->{status} // 0) == 200;
    return decode_json($r->{body});
}

sub connected_workers {
    return status()->{webhook_lock_redis_connected_workers} // -1;
}

sub connected { $h->wait_for(sub { connected_workers() == 1 }) }

# a new webhook_redis line; ready only when meant to connect
sub use_redis {
    my ($line) = @_;

    my $mark = $h->log_mark;
    $h->reload(conf($line), ready => 0) or die "reload failed\n";
    return $mark;
}

# refused: said once with the reason, even after retries; the failure
# policy applies
sub refused {
    my ($name, $mark, $reason) = @_;

    my $line = qr/\[error\].*redis rediss:\S+ is unreachable: $reason/;

    $h->error_log_like($line, "$name: the reason is logged",
                       since => $mark, timeout => 10 * $h->slowness);

    ok($h->wait_for(sub { $h->error_log($mark) =~ /still down: $reason/ }),
       "$name: tried again");

    my @lines = $h->error_log($mark) =~ /($line)/g;
    is(scalar @lines, 1, "$name: said once per outage");

    is(connected_workers(), 0, "$name: not connected");

    my $r = post('/closed');
    is($r->{status}, 503, "$name: fail closed, 503");
    is(error_of($r), 'lock_unavailable', "$name: lock_unavailable");
    is($r->{headers}{'retry-after'}, '7', "$name: with Retry-After");

    $up->clear;
    $r = post('/open');
    is($r->{status}, 200, "$name: fail open, forwarded");
    is((($up->requests)[0] // {})->{headers}{'x-lock'}, 'open',
       "$name: forwarded unlocked");
}

# a lock held while its request is in the upstream, gone after
sub locks {
    my ($name, $r) = @_;

    $r //= $redis;

    my $sender = 'held' . ++$n;

    $up->clear;
    my $held = $h->request_async(POST => "/closed?hold=$sender",
                                 timeout => 10 * $h->slowness,
                                 body => encode_json({ from => $sender }));
    $up->wait_arrived(1);

    my $keys = $r->cli('--raw', 'KEYS', "*$sender*");
    like($keys, qr/\Q$sender\E/, "$name: the lock is in Redis");

    my $busy = post('/closed', $sender);
    is($busy->{status}, 503, "$name: the same sender meanwhile: 503");
    is(error_of($busy), 'sender_busy', "$name: sender_busy");

    $up->release($sender);
    my ($res) = $h->wait_all($held);
    is($res->{status}, 200, "$name: the holder was forwarded");
    is(($up->requests)[0]{headers}{'x-lock'}, 'acquired',
       "$name: under the lock");

    ok($h->wait_for(sub { $r->cli('--raw', 'KEYS', "*$sender*") eq '' }),
       "$name: released after the response");

    is(post('/closed', $sender)->{status}, 200,
       "$name: the sender passes again");
}

###############################################################################

# the URL's host is the name checked, against the CA given

$h->start(conf("rediss://localhost:%%PORT_REDIS_TLS%% tls_ca=$pki->{ca}"),
          ready => 0);

ok(connected(), 'connected through TLS');
locks('tls');

# a request waits for the holder's release: the subscriber's
# connection is TLS too

$up->clear;
my $holder = $h->request_async(POST => '/wait?hold=w',
                               timeout => 10 * $h->slowness,
                               body => encode_json({ from => 'w' }));
$up->wait_arrived(1);

my $waiter = post_async('/wait', 'w');
ok($h->wait_for(sub { status()->{webhook_lock_requests_waiting} == 1 }),
   'a second request of the sender waits');

$up->release('w');
my @res = $h->wait_all($holder, $waiter);
is_deeply([ map { $_->{status} } @res ], [ 200, 200 ],
          'both forwarded, one after the other');
is(join(',', map { $_->{headers}{'x-lock'} } $up->requests),
   'acquired,waited', 'the second after waiting, woken through TLS');
like($redis->cli('CLIENT', 'LIST'), qr/\bsub=1\b/,
     'the subscriber is subscribed, over TLS');
$h->no_error_log(qr/unreachable/, 'nothing was unreachable');

# 1 MB in one message: more than one pass of the event loop reads, and
# the replies after it are still in step

my $channel = $redis->cli('--raw', 'PUBSUB', 'CHANNELS', 'webhook_lock:*');
like($channel, qr/^webhook_lock:/, "the worker's channel");

my $mark = $h->log_mark;
is($redis->cli('EVAL', "return redis.call('PUBLISH', KEYS[1],"
                       . " string.rep('x', 1048576))", 1, $channel), 1,
   'a message of 1 MB to the subscriber');
is($redis->cli('PUBLISH', $channel, 'tail'), 1, 'then a short one');

$h->error_log_like(qr/unexpected message "x{80}" on/,
                   'the long one read whole', since => $mark);
$h->error_log_like(qr/unexpected message "tail" on/,
                   'the short one after it', since => $mark);
$h->no_error_log(qr/unreachable/, 'the subscriber stayed connected',
                 since => $mark);
locks('after a long read');

# an address in the URL is checked against the certificate's addresses

use_redis("rediss://127.0.0.1:%%PORT_REDIS_TLS%% tls_ca=$pki->{ca}");
ok(connected(), 'an address matches the certificate\'s IP entry');
locks('by address');

# another name than the certificate's

$mark = use_redis("rediss://127.0.0.1:%%PORT_REDIS_TLS%%"
                     . " tls_ca=$pki->{ca} tls_name=redis.example.com");
refused('name mismatch', $mark,
        qr/certificate does not match "redis\.example\.com"/);

# a CA that did not sign the certificate

$mark = use_redis("rediss://localhost:%%PORT_REDIS_TLS%%"
                  . " tls_ca=$pki->{other_ca}");
refused('wrong CA', $mark,
        qr/certificate verify failed: \S/);
$h->error_log_like(qr/\[warn\].*forwarded unlocked/,
                   'fail open is logged as a warning', since => $mark);

# not checked: the same wrong CA is taken

use_redis("rediss://localhost:%%PORT_REDIS_TLS%% tls_ca=$pki->{other_ca}"
          . " tls_verify=off");
ok(connected(), 'tls_verify=off: connected despite the wrong CA');
locks('tls_verify=off');

# Redis asks for a client certificate

use_redis("rediss://localhost:%%PORT_REDIS_MTLS%% tls_ca=$pki->{ca}"
          . " tls_cert=$pki->{client_cert} tls_key=$pki->{client_key}");
ok(connected(), 'client certificate: connected');
locks('client certificate', $strict);

$mark = use_redis("rediss://localhost:%%PORT_REDIS_MTLS%% tls_ca=$pki->{ca}");
# the server's alert, or the reset after it, whichever comes first
refused('no client certificate', $mark, qr/TLS \w+ failed: \S/);

# AUTH with an ACL user, over TLS

is($redis->cli(qw/ACL SETUSER hook on >s3cret ~* &* +@all/), 'OK',
   'an ACL user in Redis');

use_redis("rediss://hook:s3cret\@localhost:%%PORT_REDIS_TLS%%"
          . " tls_ca=$pki->{ca}");
ok(connected(), 'ACL user over TLS: connected');
like($redis->cli('CLIENT', 'LIST'), qr/user=hook\b/,
     'Redis sees the ACL user');
locks('ACL user');

$mark = use_redis("rediss://hook:wrong\@localhost:%%PORT_REDIS_TLS%%"
                  . " tls_ca=$pki->{ca}");
refused('wrong password', $mark, qr/"AUTH" failed: WRONGPASS/);

# Redis restarts

use_redis("rediss://localhost:%%PORT_REDIS_TLS%% tls_ca=$pki->{ca}");
ok(connected(), 'connected before the restart');

$mark = $h->log_mark;
$redis->stop;

$h->error_log_like(qr/redis rediss:\S+ is unreachable/,
                   'Redis stopped: the outage is logged', since => $mark,
                   timeout => 10 * $h->slowness);

my $r = post('/closed');
is($r->{status}, 503, 'Redis stopped: 503');
is(error_of($r), 'lock_unavailable', 'Redis stopped: lock_unavailable');

$redis->start;
ok(connected(), 'Redis back: connected again');
$h->error_log_like(qr/\[notice\].*redis rediss:\S+ is back/,
                   'and that is logged', since => $mark);
locks('after the restart');

# a plaintext Redis behind rediss://: it waits for the end of a line
# that the ClientHello does not have

$mark = use_redis("rediss://127.0.0.1:%%PORT_REDIS%% tls_ca=$pki->{ca}"
                  . " connect_timeout=500ms");
refused('plaintext server', $mark,
        qr/(?:TLS handshake failed: \S|connect timed out)/);

# a handshake that never ends: connect_timeout, and nothing waits on it

$mark = use_redis("rediss://localhost:%%PORT_SILENT%% tls_ca=$pki->{ca}"
                  . " connect_timeout=500ms");

ok($h->wait_for(sub { -s $silent_log }), 'the silent peer is sent bytes');
my $hello = $h->read_file('silent.bytes');
like(substr($hello, 0, 1), qr/\x16/, 'a TLS handshake record (a ClientHello)');
like($hello, qr/localhost/, 'with the name as SNI');

# a worker blocked in the handshake would answer nothing, ever

my $p = $h->request(GET => '/plain', timeout => 5);
is($p->{status}, 200, 'a plain location answers meanwhile');

my $t = time;
my $slow = post_async('/closed', 'silent');

($r) = $h->wait_all($slow);
my $elapsed = time - $t;
is($r->{status}, 503, 'handshake never done: 503');
is(error_of($r), 'lock_unavailable', 'handshake never done: '
                                     . 'lock_unavailable');
ok($elapsed < 5 * $h->slowness,
   sprintf('bounded by connect_timeout (%.3f s)', $elapsed));
$h->error_log_like(qr/redis rediss:\S+ is unreachable: connect timed out/,
                   'the timeout is logged', since => $mark);

###############################################################################

# configuration errors

my $bad = conf("rediss://localhost:1 tls_ca=" . $h->testdir . "/none.pem");
$h->config_fails($bad, qr/none\.pem/, 'a missing tls_ca file');

$bad = conf("rediss://localhost:1 tls_cert=" . $h->testdir . "/none.pem"
            . " tls_key=$pki->{client_key}");
$h->config_fails($bad, qr/none\.pem/, 'a missing tls_cert file');

$bad = conf("rediss://localhost:1 tls_cert=$pki->{client_cert}"
            . " tls_key=$pki->{key}");
$h->config_fails($bad, qr/key values mismatch|SSL_CTX_use_PrivateKey/i,
                 'a key that is not the certificate\'s');

$h->done;
