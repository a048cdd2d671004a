#!/usr/bin/perl

# Many senders waiting at once: 200 senders x 5 requests, each sender's
# five in turn, the first of each held in the upstream until the other
# four wait behind it.  Every request gets through, in order per sender,
# all but the first of each after waiting at the edge, and
# Redis and CPU use stay modest: Redis commands per request (INFO
# commandstats: the commands nginx sends, and with the calls the scripts
# make) and the CPU time of the nginx worker and of redis-server (/proc),
# printed and bounded.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use List::Util qw(min max);
use POSIX qw(ceil sysconf _SC_CLK_TCK);
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream(delay => 0.05);

my $SENDERS = 200;
my $EACH = 5;

$h->start(<<'CONF', events => 'worker_connections 4096;');
webhook_redis 127.0.0.1:%%PORT_REDIS%% max_pending=8192
              connect_timeout=30s timeout=30s;

upstream app {
    server 127.0.0.1:%%PORT_UPSTREAM%%;
    keepalive 256;
}

server {
    listen 127.0.0.1:%%PORT_NGINX%% backlog=4096;

    webhook_lock       json;
    webhook_sender     from;
    webhook_lock_key   lock:$webhook_sender;
    webhook_lock_log_level info;

    # a lock is renewed every third of its ttl: none falls inside a run,
    # however slow, so the commands counted are the take and the release
    webhook_lock_ttl   300s;

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Lock $webhook_lock_status;
    proxy_set_header X-Wait $webhook_lock_wait_time;

    location /wait {
        webhook_lock_wait 10s;
        proxy_pass http://app;
    }

    location /nowait {
        proxy_pass http://app;
    }
}
CONF

my ($worker) = $h->worker_pids;
my $tck = sysconf(_SC_CLK_TCK) || 100;

# user + system CPU of a process, in ms
sub cpu_ms {
    my ($pid) = @_;

    open my $fh, '<', "/proc/$pid/stat" or return 0;
    my @f = split / /, (<$fh> =~ s/^.*\) //sr);
    close $fh;

    return ($f[11] + $f[12]) * 1000 / $tck;
}

sub commandstats {
    my %calls;

    for (split /\r?\n/, $redis->cmd('INFO', 'commandstats')) {
        $calls{$1} = $2 if /^cmdstat_(\S+?):calls=(\d+)/;
    }

    return \%calls;
}

# Requests go out on connections of their own; the answers are read as
# they come, also while the test waits for something else (pump).

my $port = $h->port('nginx');
my $sel = IO::Select->new;
my (%buf, %id, %status);

sub send_all {
    for my $r (@_) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                      PeerPort => $port,
                                      Proto => 'tcp')
            or die "connect: $!\n";

        print $s "POST $r->{uri} HTTP/1.1\r\nHost: localhost\r\n"
                 . "Connection: close\r\n"
                 . "Content-Type: application/json\r\n"
                 . "X-Id: $r->{id}\r\n"
                 . 'Content-Length: ' . length($r->{body}) . "\r\n\r\n"
                 . $r->{body};

        $s->blocking(0);
        $sel->add($s);
        $id{$s} = $r->{id};
        $buf{$s} = '';
    }
}

# reads answers until $cond is true (or, without one, until every
# connection is answered); false after $timeout seconds
sub pump {
    my ($cond, $timeout) = @_;

    my $deadline = time + $timeout * $h->slowness;

    while (time < $deadline) {
        return 1 if $cond ? $cond->() : !$sel->count;

        for my $s ($sel->can_read(0.02)) {
            my $n = sysread($s, $buf{$s}, 65536, length $buf{$s});
            next if !defined $n && $!{EAGAIN};

            next if $n;

            ($status{ $id{$s} }) = $buf{$s} =~ m{^HTTP/1\.\d (\d{3})};
            $status{ $id{$s} } //= 'none';

            $sel->remove($s);
            close $s;
        }
    }

    return 0;
}

my $runs = 0;

# Round k sends the k-th request of every sender.  The first of each
# sender is held in the upstream, and each next round goes out once the
# one before is all in place (held, waiting in the queue, or answered):
# every request but the first of each sender finds its sender's lock
# taken, whatever the speed of the machine, and each sender's requests
# reach nginx in the order sent.  Then the upstream lets the first go.
sub run {
    my ($uri, $senders, $each) = @_;

    my $hold = 'first-' . ++$runs;
    my $sep = $uri =~ /\?/ ? '&' : '?';
    my @rounds;

    for my $k (0 .. $each - 1) {
        push @rounds, [ map {
            { uri => $k == 0 && $each > 1 ? "$uri${sep}hold=$hold" : $uri,
              id => "s$_-$k", body => qq({"from":"s$_"}) }
        } 1 .. $senders ];
    }

    $redis->cmd('CONFIG', 'RESETSTAT');
    $up->clear;
    %status = ();

    my $ngx = cpu_ms($worker);
    my $rds = cpu_ms($redis->pid);
    my $t = time;
    my %m = (requests => $senders * $each, rounds => 1);

    send_all(@{ shift @rounds });

    if (@rounds) {
        $m{rounds} &&= pump(sub { $up->arrived >= $senders }, 30);

        my $sent = 0;

        for my $round (@rounds) {
            send_all(@$round);
            $sent += @$round;

            $m{rounds} &&= pump(sub {
                keys(%status)
                + $h->status->{webhook_lock_requests_waiting} >= $sent
            }, 30);
        }

        $up->release($hold);
    }

    pump(undef, 60);

    # the releases of the last answers
    $redis->settled_keys(3);

    $m{wall} = time - $t;
    $m{nginx} = cpu_ms($worker) - $ngx;
    $m{redis} = cpu_ms($redis->pid) - $rds;
    $m{status} = { %status };

    my $calls = commandstats();

    # what nginx sends: scripts, and SET where no script sends one

    $m{top} = 0;
    $m{top} += $calls->{$_} // 0
        for 'evalsha', 'eval', $uri =~ /nowait/ ? 'set' : ();
    $m{all} = 0;
    $m{all} += $_ for map { $calls->{$_} }
                      grep { !/^(?:info|config|keys|ping)$/ } keys %$calls;
    $m{calls} = $calls;

    return \%m;
}

sub report {
    my ($name, $m) = @_;

    my $n = $m->{requests};

    diag(sprintf "%s: %d requests in %.2f s; Redis commands per request: "
                 . "%.2f sent by nginx, %.2f with the scripts' own calls; "
                 . "CPU per request: nginx worker %.3f ms, redis-server "
                 . "%.3f ms (total %d ms, %d ms)",
                 $name, $n, $m->{wall}, $m->{top} / $n, $m->{all} / $n,
                 $m->{nginx} / $n, $m->{redis} / $n, $m->{nginx},
                 $m->{redis});

    diag('  ' . join(' ', map { "$_=$m->{calls}{$_}" }
                         sort keys %{ $m->{calls} }));
}

###############################################################################

# the reference: 1000 senders, one request each, nobody waits

my $m = run('/wait', $SENDERS * $EACH, 1);
report('no contention', $m);

is(scalar(grep { $_ eq '200' } values %{ $m->{status} }), 1000,
   'no contention: all 1000 forwarded');
ok($m->{top} / 1000 <= 2.01, 'two commands per request: take, release');

# 200 senders x 5, four of every five waiting: with a fast upstream, and
# with a slow one (waits over a second: the slow poll shows)

my $n = $SENDERS * $EACH;

for my $delay (0.05, 0.3) {
    $m = run("/wait?delay=$delay", $SENDERS, $EACH);
    report("$SENDERS senders x $EACH, upstream $delay s", $m);

    ok($m->{rounds}, 'each round in place before the next went out');

    my @bad = grep { $m->{status}{$_} ne '200' } sort keys %{ $m->{status} };
    is(scalar keys %{ $m->{status} }, $n, 'every request answered');
    is(scalar @bad, 0, 'every request forwarded, none 503')
        or diag('not 200: ' . join ' ', @bad[0 .. min(9, $#bad)]);

    my @reqs = $up->requests;
    my @odd = grep { ($_->{headers}{'x-id'} // '') !~ /^s\d+-\d$/ } @reqs;

    diag('upstream requests without an X-Id: '
         . JSON::PP->new->canonical->encode([ @odd[0 .. min(2, $#odd)] ]))
        if @odd;

    my %order;

    for my $r (@reqs) {
        my ($s, $k) = ($r->{headers}{'x-id'} // '') =~ /^(s\d+)-(\d)$/
            or next;
        push @{ $order{$s} }, $k;
    }

    my @unordered = grep { join('', @{ $order{$_} }) ne '01234' }
                    keys %order;
    is(scalar @unordered, 0, 'each sender\'s requests in the order sent')
        or diag(join ' ', map { "$_: @{ $order{$_} }" }
                          grep { defined } @unordered[0 .. 4]);

    my (undef, $per) = NgxHarness::max_concurrency(\@reqs, sub {
        ($_[0]{headers}{'x-id'} // '') =~ s/-\d+$//r
    });
    is(scalar(grep { $_ > 1 } values %$per), 0,
       'never two requests of one sender in the upstream at once');

    my $waited = grep { ($_->{headers}{'x-lock'} // '') eq 'waited' } @reqs;
    is($waited, $n - $SENDERS, 'all but the first of each waited');

    # two per request (take, release) and, while a request waits, the
    # slow poll: no more than one question each 0.75 s

    my $polls = 0;
    $polls += ceil(($_->{headers}{'x-wait'} // 0) / 0.75) for @reqs;

    ok($m->{top} <= 2 * $n + $polls,
       sprintf('%.2f commands per request: two, and at most a slow poll '
               . 'per 0.75 s of waiting (%.2f)', $m->{top} / $n,
               2 + $polls / $n));
    ok(($m->{calls}{publish} // 0) <= $n,
       'at most one wake-up per request ('
       . ($m->{calls}{publish} // 0) . ')');
    ok($m->{redis} / $n < 1, 'redis-server CPU under 1 ms per request');
    ok($m->{nginx} / $n < 2 * $h->slowness,
       'nginx worker CPU under ' . 2 * $h->slowness . ' ms per request');
}

# the same burst without webhook_lock_wait, for comparison: 503s

$m = run('/nowait', $SENDERS, $EACH);
report("$SENDERS senders x $EACH, no wait", $m);
ok($m->{rounds}, 'without waiting: each round answered before the next');
is(scalar(grep { $_ eq '503' } values %{ $m->{status} }), $n - $SENDERS,
   'all but the first of each answered 503');
ok($m->{top} / $n <= 2.01, 'without waiting: at most two per request');
ok(!exists $m->{calls}{publish}, 'and no wake-ups');

$h->done;
