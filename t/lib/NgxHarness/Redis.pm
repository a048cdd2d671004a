package NgxHarness::Redis;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::Redis - a real redis-server for the tests, and a RESP client

=head1 SYNOPSIS

    my $r = $h->redis(password => 's3cret');    # %%PORT_REDIS%%
    is($r->cmd(SET => 'k', 'v'), 'OK');
    is($r->cmd(GET => 'k'), 'v');
    is($r->cmd('BOGUS')->{err} =~ /^ERR/, 1);

    if ($r->can_restart) { $r->stop; ...; $r->start; }

=head1 DESCRIPTION

Starts C<redis-server --port N --bind 127.0.0.1 --save '' --appendonly no
--dir TESTDIR> (output in C<TESTDIR/NAME.log>) and waits for PING. Options:
C<name> (port name, default C<redis>), C<password>, C<unixsocket> (also
listen on C<TESTDIR/NAME.sock>, mode 777; see C<socket_path>), C<args>
(more redis-server arguments, array ref), C<host> (the loopback address
to listen on and reach it at, C<127.0.0.1> by default: C<127.0.0.2> makes
a second Redis on the same port, as a container given a new address).

With C<TEST_NGINX_REDIS_PORT> (and C<TEST_NGINX_REDIS_PASSWORD>) an
existing Redis is used instead: C<can_restart> is false and C<start>,
C<stop>, C<kill> die. C<TEST_NGINX_REDIS_SERVER> names the binary.

C<cmd(@args)> sends one command on a kept connection (AUTH on connect)
and returns the decoded reply (see L<NgxHarness::RESP>: errors are
C<< { err => 'MSG' } >>); it dies when Redis cannot be reached. C<stop>
sends SIGTERM (no save configured, so nothing is written) and waits,
C<kill> sends SIGKILL, C<start> starts it again on the same port.

C<settled_keys($timeout)> returns C<KEYS *> once it is empty, or as it is
after C<$timeout> seconds (3 by default, times the harness's
C<slowness>): nginx releases a lock just after the response, so a test
that asserts "released" must allow that.

=cut

use strict;
use warnings;

use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(time sleep);

use NgxHarness::RESP qw(resp_command resp_reply);

sub new {
    my ($class, $h, %opts) = @_;

    my $name = lc($opts{name} // 'redis');

    my $self = bless {
        h        => $h,
        name     => $name,
        password => $opts{password},
        host     => $opts{host} // '127.0.0.1',
        args     => $opts{args} || [],
        timeout  => $opts{timeout} // 5,
    }, $class;

    if (my $port = $ENV{TEST_NGINX_REDIS_PORT}) {
        $self->{external} = 1;
        $self->{port} = $port;
        $self->{password} //= $ENV{TEST_NGINX_REDIS_PASSWORD};
        $h->_set_port($name, $port);

        $self->_wait_ready(2)
            or $h->_skip("no Redis on TEST_NGINX_REDIS_PORT=$port");

        return $self;
    }

    $self->{bin} = $ENV{TEST_NGINX_REDIS_SERVER}
                   || NgxHarness::_which('redis-server')
                   || $h->_skip('redis-server not found in PATH');

    $self->{port} = $h->port($name);
    $self->{socket} = $h->testdir . "/$name.sock" if $opts{unixsocket};

    return $self->start;
}

sub port        { $_[0]{port} }
sub host        { $_[0]{host} }
sub name        { $_[0]{name} }
sub pid         { $_[0]{pid} }
sub password    { $_[0]{password} }
sub socket_path { $_[0]{socket} }
sub can_restart { !$_[0]{external} }

sub start {
    my ($self) = @_;

    die "external Redis cannot be started\n" if $self->{external};
    return $self if $self->{pid};

    my $h = $self->{h};
    my $log = $h->testdir . "/$self->{name}.log";

    my @cmd = ($self->{bin}, '--port', $self->{port},
               '--bind', $self->{host}, '--save', '', '--appendonly', 'no',
               '--dir', $h->testdir, '--daemonize', 'no');

    push @cmd, '--requirepass', $self->{password}
        if defined $self->{password};

    push @cmd, '--unixsocket', $self->{socket}, '--unixsocketperm', '777'
        if $self->{socket};

    push @cmd, @{ $self->{args} };

    $self->{pid} = $h->run_daemon(sub {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!\n";
    });

    if (!$self->_wait_ready(5)) {
        $self->kill;
        die "redis-server did not start on port $self->{port}:\n"
            . (NgxHarness::_slurp($log) // '');
    }

    return $self;
}

sub stop {
    my ($self) = @_;

    die "external Redis cannot be stopped\n" if $self->{external};

    delete $self->{sock};

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid, timeout => 5);
}

sub kill {
    my ($self) = @_;

    die "external Redis cannot be killed\n" if $self->{external};

    delete $self->{sock};

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid, signal => 'KILL');
}

sub cmd {
    my ($self, @args) = @_;

    for my $try (1, 2) {
        $self->{sock} //= $self->_connect;

        my $reply = eval { $self->_roundtrip($self->{sock}, \@args) };
        return $reply unless $@;

        delete $self->{sock};

        # a connection broken by a restart: once more on a new one

        die "redis $self->{port}: $@"
            if $try == 2 || $@ !~ /^(?:closed|write)/;
    }
}

sub settled_keys {
    my ($self, $timeout) = @_;

    my $deadline = time + ($timeout // 3) * $self->{h}->slowness;

    while (1) {
        my $keys = $self->cmd('KEYS', '*');
        return $keys if !@$keys || time > $deadline;
        sleep 0.02;
    }
}

sub _connect {
    my ($self) = @_;

    my $sock = IO::Socket::INET->new(
        PeerAddr => $self->{host},
        PeerPort => $self->{port},
        Proto    => 'tcp',
        Timeout  => $self->{timeout},
    ) or die "redis $self->{port}: connect: $!\n";

    if (defined $self->{password}) {
        my $r = $self->_roundtrip($sock, [ 'AUTH', $self->{password} ]);
        die "redis $self->{port}: AUTH: $r->{err}\n" if ref $r;
    }

    return $sock;
}

sub _roundtrip {
    my ($self, $sock, $args) = @_;

    local $SIG{PIPE} = 'IGNORE';

    my $out = resp_command(@$args);

    while (length $out) {
        my $n = syswrite($sock, $out);
        die "write: $!\n" unless defined $n;
        substr($out, 0, $n, '');
    }

    my $deadline = time + $self->{timeout};
    my $sel = IO::Select->new($sock);
    my $buf = '';

    while (1) {
        my ($complete, $value) = resp_reply(\$buf);
        return $value if $complete;

        my $left = $deadline - time;
        die "timeout\n" if $left <= 0;
        next unless $sel->can_read($left);

        my $n = sysread($sock, $buf, 65536, length $buf);
        die "closed\n" unless $n;
    }
}

sub _wait_ready {
    my ($self, $timeout) = @_;

    my $deadline = time + $timeout;

    while (time < $deadline) {
        my $pong = eval {
            local $self->{timeout} = 1;
            $self->cmd('PING');
        };

        return 1 if defined $pong && $pong eq 'PONG';

        return 0 if $self->{pid} && !$self->{h}->_daemon_alive($self->{pid});

        sleep 0.02;
    }

    return 0;
}

1;
