package RedisSentinel;

# (C) The webhook_lock authors

=head1 NAME

RedisSentinel - a primary, its replicas and the sentinels that watch
them, all real redis-servers, for tests

=head1 SYNOPSIS

    use RedisSentinel;

    my $rs = RedisSentinel->new($h, sentinels => 3, replicas => 2);
    $rs->wait_settled;                  # replicas in sync, sentinels met

    $rs->primary;                       # NgxHarness::Redis
    $rs->replica;                       # the first; replica(1)...
    $rs->sentinel(0);                   # NgxHarness::Redis too: cmd, stop
    $rs->addresses;                     # "127.0.0.1:P0,127.0.0.1:P1,..."
    $rs->master(0);                     # "127.0.0.1:PORT", as sentinel 0 says

    $rs->record(1);                     # a failover's events, timed
    $rs->failover(1);                   # SENTINEL FAILOVER, on sentinel 1
    $rs->switches(1);                   # ([TIME, "NAME IP PORT IP PORT"], ...)
    $rs->events(1, '+promoted-slave');  # ([TIME, MESSAGE], ...)

    my $mon = RedisSentinel::monitor($h, $redis);
    RedisSentinel::monitored($mon);     # ([TIME, [CMD, ARGS...]], ...)

=head1 DESCRIPTION

C<new($h, %opts)> starts a primary (port name C<PREFIX_primary>),
C<replicas> replicas of it (1; C<PREFIX_replica>, C<PREFIX_replica1>...,
the first one the one a failover promotes) and C<sentinels> sentinels
(C<PREFIX_sentinel0>...; C<redis-server FILE --sentinel>, the file in the
test directory, which the sentinels rewrite) monitoring it as C<name>
(C<mymaster>) with C<quorum> (2), C<down_after> (1000 ms) and
C<failover_timeout> (3000 ms). Options: C<prefix> (C<rs>), C<password>
(the data's: C<requirepass>, C<masterauth>, C<sentinel auth-pass>),
C<sentinel_password> (C<requirepass> on the sentinels, and
C<sentinel sentinel-pass> among them), C<primary> (an
C<NgxHarness::Redis> to monitor instead of starting a primary and a
replica). The sentinels are registered with the harness, so that a
configuration naming them waits for the workers to connect, as with a
plain Redis.

C<wait_settled> waits (up to 30 s, times the harness's slowness) until
the replicas are in sync and every sentinel sees them and the other
sentinels; it dies otherwise. C<record($i)> starts a subscriber to
C<+try-failover>, C<+promoted-slave> and C<+switch-master> on sentinel
C<$i>, noting the local time of each message; C<events($i, $channel)>
reads them, C<switches($i)> those of C<+switch-master>. C<monitor($h, $redis)> starts
C<MONITOR> on a Redis and returns a handle; C<monitored($handle)> gives
the commands seen so far with Redis's own timestamps.

=cut

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

use NgxHarness;
use NgxHarness::RESP qw(resp_command resp_reply);

sub new {
    my ($class, $h, %opts) = @_;

    my $self = bless {
        h                 => $h,
        name              => $opts{name} // 'mymaster',
        prefix            => $opts{prefix} // 'rs',
        n                 => $opts{sentinels} // 3,
        nreplicas         => $opts{replicas} // 1,
        replicas          => [],
        quorum            => $opts{quorum} // 2,
        down_after        => $opts{down_after} // 1000,
        failover_timeout  => $opts{failover_timeout} // 3000,
        password          => $opts{password},
        sentinel_password => $opts{sentinel_password},
        sentinels         => [],
    }, $class;

    my $p = $self->{prefix};
    my @auth = defined $self->{password}
               ? (password => $self->{password},
                  args => [ '--masterauth', $self->{password} ])
               : ();

    if ($opts{primary}) {
        $self->{primary} = $opts{primary};

    } else {
        $self->{primary} = $h->redis(name => "${p}_primary", @auth);

        my $replica = [ '--replicaof', '127.0.0.1', $self->{primary}->port ];
        push @$replica, '--masterauth', $self->{password}
            if defined $self->{password};

        # the first replica is the one a failover promotes

        for my $i (0 .. $self->{nreplicas} - 1) {
            push @{ $self->{replicas} },
                $h->redis(name => "${p}_replica" . ($i || ''),
                          (defined $self->{password}
                           ? (password => $self->{password}) : ()),
                          args => [ @$replica, '--replica-priority',
                                    10 * ($i + 1) ]);
        }
    }

    for my $i (0 .. $self->{n} - 1) {
        my $name = "${p}_sentinel$i";

        $self->_write_conf($name, $h->port($name));

        push @{ $self->{sentinels} },
            $h->redis(class => 'RedisSentinel::Sentinel', name => $name,
                      password => $self->{sentinel_password});
    }

    return $self;
}

sub name      { $_[0]{name} }
sub primary   { $_[0]{primary} }
sub replica   { $_[0]{replicas}[$_[1] // 0] }
sub sentinel  { $_[0]{sentinels}[$_[1]] }
sub sentinels { @{ $_[0]{sentinels} } }

sub addresses {
    my ($self) = @_;
    return join ',', map { '127.0.0.1:' . $_->port } $self->sentinels;
}

sub master {
    my ($self, $i) = @_;

    my $r = $self->sentinel($i)->cmd('SENTINEL', 'get-master-addr-by-name',
                                     $self->{name});

    return ref $r eq 'ARRAY' ? "$r->[0]:$r->[1]" : undef;
}

sub failover {
    my ($self, $i) = @_;

    my $r = $self->sentinel($i)->cmd('SENTINEL', 'FAILOVER', $self->{name});
    die "SENTINEL FAILOVER: $r->{err}\n" if ref $r;

    return $r;
}

# "flags" and the like, from SENTINEL REPLICAS / SENTINELS: flat pairs

sub _instances {
    my ($self, $s, $what) = @_;

    my $list = $s->cmd('SENTINEL', $what, $self->{name});
    return () unless ref $list eq 'ARRAY';

    return map { { @$_ } } @$list;
}

sub wait_settled {
    my ($self) = @_;

    my $h = $self->{h};
    my $n = $self->{n};
    my $why = '';

    my $ok = $h->wait_for(sub {
        for my $s ($self->sentinels) {
            my @r = grep { $_->{flags} eq 'slave'
                           && ($_->{'master-link-status'} // '') eq 'ok' }
                    $self->_instances($s, 'REPLICAS');

            if (@r < @{ $self->{replicas} }) {
                $why = 'sentinel ' . $s->port . ' sees ' . scalar(@r)
                       . ' replicas in sync';
                return 0;
            }

            my @others = $self->_instances($s, 'SENTINELS');

            if (@others < $n - 1) {
                $why = 'sentinel ' . $s->port . ' knows ' . scalar(@others)
                       . ' other sentinels';
                return 0;
            }
        }

        return 1;
    }, timeout => 30);

    die "the sentinels did not settle: $why\n" unless $ok;

    return 1;
}

sub record {
    my ($self, $i) = @_;

    my $s = $self->sentinel($i);
    my $file = $self->{h}->testdir . "/events-$self->{prefix}$i.log";

    $self->{events}{$i} = $file;

    _subscriber($self->{h}, $s->port, $s->password, $file,
                [ 'SUBSCRIBE', '+try-failover', '+promoted-slave',
                  '+switch-master' ], sub {
                    my ($reply) = @_;
                    return unless ref $reply eq 'ARRAY'
                                  && $reply->[0] eq 'message';
                    return sprintf "%.6f %s %s\n", time, $reply->[1],
                                   $reply->[2];
                });

    return $file;
}

sub events {
    my ($self, $i, $channel) = @_;

    my $text = NgxHarness::_slurp($self->{events}{$i}) // '';

    return map { [ $_->[0], $_->[2] ] }
           grep { $_->[1] eq $channel }
           map { [ split / /, $_, 3 ] } split /\n/, $text;
}

sub switches {
    my ($self, $i) = @_;
    return $self->events($i, '+switch-master');
}

sub monitor {
    my ($h, $redis) = @_;

    my $file = $h->testdir . '/monitor-' . $redis->name . '.log';

    _subscriber($h, $redis->port, $redis->password, $file, [ 'MONITOR' ],
                sub {
                    my ($reply) = @_;
                    return if ref $reply || $reply eq 'OK';
                    return "$reply\n";
                });

    return $file;
}

# '1733400000.123456 [0 127.0.0.1:5000] "SET" "k" "v"'

sub monitored {
    my ($file) = @_;

    my @seen;

    for my $line (split /\n/, NgxHarness::_slurp($file) // '') {
        my ($t, $rest) = $line =~ /^(\d+\.\d+) \[[^\]]*\] (.*)$/ or next;
        my @args = map { s/\\(.)/$1/gr } $rest =~ /"((?:[^"\\]|\\.)*)"/g;
        push @seen, [ $t, \@args ];
    }

    return @seen;
}

# a forked client: one command, then every reply through $line to $file

sub _subscriber {
    my ($h, $port, $password, $file, $command, $line) = @_;

    open my $fh, '>', $file or die "$file: $!\n";
    close $fh;

    my $ready = "$file.ready";

    # again at once when closed: Sentinel kills the clients of the
    # replica it promotes

    $h->run_daemon(sub {
        open my $log, '>>', $file or die "$file: $!\n";
        $log->autoflush(1);

        while (1) {
            my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
                                             PeerPort => $port,
                                             Proto => 'tcp');
            if (!$sock) {
                sleep 0.01;
                next;
            }

            my $out = '';
            $out .= resp_command('AUTH', $password) if defined $password;
            $out .= resp_command(@$command);
            syswrite($sock, $out);

            my $buf = '';
            my $skip = defined $password ? 1 : 0;

            while (sysread($sock, $buf, 65536, length $buf)) {
                while (my ($complete, $reply) = resp_reply(\$buf)) {
                    if ($skip) {
                        $skip--;
                        next;
                    }

                    if (!-e $ready) {
                        open my $r, '>', $ready;
                        close $r;
                    }

                    my $text = $line->($reply);
                    print $log $text if defined $text;
                }
            }
        }
    });

    $h->wait_for(sub { -e $ready }, timeout => 10)
        or die "no answer to @$command on port $port\n";
}

sub _write_conf {
    my ($self, $name, $port) = @_;

    my $h = $self->{h};
    my $m = $self->{name};

    my $conf = join '', map { "$_\n" }
        "port $port",
        'bind 127.0.0.1',
        'daemonize no',
        'dir ' . $h->testdir,
        "sentinel monitor $m 127.0.0.1 " . $self->{primary}->port
            . " $self->{quorum}",
        "sentinel down-after-milliseconds $m $self->{down_after}",
        "sentinel failover-timeout $m $self->{failover_timeout}",
        "sentinel parallel-syncs $m 1",
        (defined $self->{password}
         ? "sentinel auth-pass $m $self->{password}" : ()),
        (defined $self->{sentinel_password}
         ? ("requirepass $self->{sentinel_password}",
            "sentinel sentinel-pass $self->{sentinel_password}") : ());

    $h->write_file("$name.conf", $conf);
}


package RedisSentinel::Sentinel;

# a sentinel: NgxHarness::Redis's client, stop and kill; its own start

use parent -norequire, 'NgxHarness::Redis';

sub start {
    my ($self) = @_;

    return $self if $self->{pid};

    my $h = $self->{h};
    my $conf = $h->testdir . "/$self->{name}.conf";
    my $log = $h->testdir . "/$self->{name}.log";

    my @cmd = ($self->{bin}, $conf, '--sentinel');

    $self->{pid} = $h->run_daemon(sub {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!\n";
    });

    if (!$self->_wait_ready(5)) {
        $self->kill;
        die "the sentinel did not start on port $self->{port}:\n"
            . (NgxHarness::_slurp($log) // '');
    }

    return $self;
}

1;
