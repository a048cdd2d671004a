#!/usr/bin/perl

# Many senders waiting at once: 200 senders x 5 requests, each sender's
# five in turn.  Every request gets through, in order per sender, and
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
use List::Util qw(min max);
use POSIX qw(sysconf _SC_CLK_TCK);
use Time::HiRes qw/time sleep/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream(delay => 0.05);

my $SENDERS = 200;
my $EACH = 5;

$h->start(<<'CONF', events => 'worker_connections 4096;');
webhook_redis 127.0.0.1:%%PORT_REDIS%% max_pending=8192;

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

    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_set_header X-Id $http_x_id;
    proxy_set_header X-Lock $webhook_lock_status;

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

# sends each request at its time on a connection of its own, returns
# the statuses by id
sub blast {
    my (@reqs) = @_;

    my $port = $h->port('nginx');
    my $sel = IO::Select->new;
    my (%buf, %id, %status);

    @reqs = sort { $a->{at} <=> $b->{at} } @reqs;

    my $deadline = time + 60;

    while ((@reqs || $sel->count) && time < $deadline) {
        while (@reqs && $reqs[0]{at} <= time) {
            my $r = shift @reqs;

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

        my $wait = @reqs ? max(0, $reqs[0]{at} - time) : 1;

        for my $s ($sel->can_read($wait)) {
            my $n = sysread($s, $buf{$s}, 65536, length $buf{$s});
            next if !defined $n && $!{EAGAIN};

            next if $n;

            ($status{ $id{$s} }) = $buf{$s} =~ m{^HTTP/1\.\d (\d{3})};
            $status{ $id{$s} } //= 'none';

            $sel->remove($s);
            close $s;
        }
    }

    return \%status;
}

# round k sends the k-th request of every sender; rounds 20 ms apart
sub run {
    my ($uri, $senders, $each) = @_;

    my $t0 = time + 0.2;
    my @reqs;

    for my $k (0 .. $each - 1) {
        for my $s (1 .. $senders) {
            push @reqs, { uri => $uri, id => "s$s-$k",
                          body => qq({"from":"s$s"}),
                          at => $t0 + 0.02 * $k + 0.00002 * $s };
        }
    }

    $redis->cmd('CONFIG', 'RESETSTAT');
    $up->clear;

    my $ngx = cpu_ms($worker);
    my $rds = cpu_ms($redis->pid);
    my $t = time;

    my $status = blast(@reqs);

    # the releases of the last answers
    $redis->settled_keys(3);

    my %m = (requests => scalar @reqs,
             wall => time - $t,
             nginx => cpu_ms($worker) - $ngx,
             redis => cpu_ms($redis->pid) - $rds,
             status => $status);

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

    my @bad = grep { $m->{status}{$_} ne '200' } sort keys %{ $m->{status} };
    is(scalar keys %{ $m->{status} }, $n, 'every request answered');
    is(scalar @bad, 0, 'every request forwarded, none 503')
        or diag('not 200: ' . join ' ', @bad[0 .. min(9, $#bad)]);

    my @reqs = $up->requests;
    my %order;
    push @{ $order{ $_->{headers}{'x-id'} =~ s/-\d+$//r } },
         $_->{headers}{'x-id'} =~ s/^.*-//r for @reqs;

    my @unordered = grep { join('', @{ $order{$_} }) ne '01234' }
                    keys %order;
    is(scalar @unordered, 0, 'each sender\'s requests in the order sent')
        or diag(join ' ', map { "$_: @{ $order{$_} }" } @unordered[0 .. 4]);

    my (undef, $per) = NgxHarness::max_concurrency(\@reqs,
                           sub { $_[0]{headers}{'x-id'} =~ s/-\d+$//r });
    is(scalar(grep { $_ > 1 } values %$per), 0,
       'never two requests of one sender in the upstream at once');

    # with the fast upstream, some came after the one before was done

    my $waited = grep { $_->{headers}{'x-lock'} eq 'waited' } @reqs;

    if ($delay > 0.1) {
        is($waited, $n - $SENDERS, 'all but the first of each waited');

    } else {
        diag("$waited of them waited");
    }

    ok($m->{top} / $n < 3, sprintf('fewer than 3 commands per request '
                                   . '(%.2f)', $m->{top} / $n));
    ok(($m->{calls}{publish} // 0) <= $n,
       'at most one wake-up per request ('
       . ($m->{calls}{publish} // 0) . ')');
    ok($m->{redis} / $n < 1, 'redis-server CPU under 1 ms per request');
    ok($m->{nginx} / $n < 2, 'nginx worker CPU under 2 ms per request');
}

# the same burst without webhook_lock_wait, for comparison: 503s

$m = run('/nowait', $SENDERS, $EACH);
report("$SENDERS senders x $EACH, no wait", $m);
ok($m->{top} / $n <= 2.01, 'without waiting: at most two per request');
ok(!exists $m->{calls}{publish}, 'and no wake-ups');

$h->done;
