#!/usr/bin/perl

# A request that comes while its worker connects to Redis waits for the
# connection (at most connect_timeout) instead of taking the failure
# policy: reloads under load, with webhook_redis_fail open and closed,
# give no "open" and no "error" while Redis is up.  Redis sits behind a
# relay that holds each new connection 300 ms before passing bytes, as a
# Redis a little far away would: every new worker is young that long.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP;
use POSIX ();
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis debug/]);
my $redis = $h->redis;
my $up = $h->upstream;
my $dir = $h->testdir;

my $relay_port = $h->port('relay');
my $redis_port = $redis->port;

# one process per connection: 300 ms of silence, then both ways

sub relay {
    my $l = IO::Socket::INET->new(LocalAddr => '127.0.0.1',
                                  LocalPort => $relay_port, Listen => 64,
                                  ReuseAddr => 1) or die "relay: $!";
    $SIG{CHLD} = 'IGNORE';

    while (1) {
        my $c = $l->accept or next;

        if (fork) {
            close $c;
            next;
        }

        sleep 0.3;

        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $redis_port)
            or POSIX::_exit(1);
        my $sel = IO::Select->new($c, $s);

        while (my @ready = $sel->can_read) {
            for my $from (@ready) {
                my $to = $from == $c ? $s : $c;
                my $n = sysread($from, my $buf, 65536);
                POSIX::_exit(0) unless $n;
                syswrite($to, $buf);
            }
        }

        POSIX::_exit(0);
    }
}

$h->run_daemon(\&relay);

for (1 .. 500) {
    last if IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                  PeerPort => $relay_port);
    sleep 0.01;
}

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_RELAY%% connect_timeout=3s;

log_format st '$uri $status $webhook_lock_status';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/st.log st;

    webhook_lock   json;
    webhook_sender from;

    location /open {
        webhook_redis_fail open;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /closed {
        webhook_redis_fail closed;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

# the first worker's connection is ready: a request locks

for (1 .. 100) {
    last if ($h->request(POST => '/closed',
                         body => encode_json({ from => 'warm' }))->{status}
             // 0) == 200;
    sleep 0.05;
}

sub served { scalar(() = $h->read_file('st.log') =~ /\n/g) }

# three clients, each one request after the other, new senders each time

my @clients;

for my $g (1 .. 3) {
    push @clients, $h->run_daemon(sub {
        my $n = 0;

        until (-e "$dir/stop") {
            my $loc = $n % 2 ? '/open' : '/closed';
            $h->request(POST => $loc, timeout => 10,
                        body => encode_json({ from => "g$g-" . $n++ }));
        }

        POSIX::_exit(0);
    });
}

my $mark = $h->log_mark;
my $reloads = 0;

for my $i (1 .. 5) {
    my $before = served();

    # requests flow before each reload
    for (1 .. 500) {
        last if served() >= $before + 20;
        sleep 0.01;
    }

    $reloads++ if $h->reload(undef, timeout => 10);
}

is($reloads, 5, 'five reloads, each with new workers');

my $before = served();
for (1 .. 500) {
    last if served() >= $before + 20;
    sleep 0.01;
}

open my $fh, '>', "$dir/stop";
close $fh;

# each client ends after the request it is sending

for my $pid (@clients) {
    for (1 .. 3000) {
        last unless $h->_daemon_alive($pid);
        sleep 0.01;
    }
}

my %st;
my $n = 0;

for my $line (split /\n/, $h->read_file('st.log')) {
    $n++;
    my ($uri, $status, $lock) = split ' ', $line;
    $st{"$uri $lock"}++;
    $st{"status $status"}++;
}

my $summary = join ', ', map { "$_: $st{$_}" } sort keys %st;

ok($n > 100, "requests flowed through the reloads ($n)");
is($st{'/open open'} // 0, 0, 'fail open: none forwarded unlocked');
is($st{'/closed error'} // 0, 0, "fail closed: none refused ($summary)");
is(($st{'status 200'} // 0), $n, 'every request forwarded');

my @waited = $h->error_log($mark) =~ /waits for the connection/g;
ok(@waited > 0, scalar(@waited) . ' requests waited for a young worker\'s '
                . 'connection');

$h->done;
