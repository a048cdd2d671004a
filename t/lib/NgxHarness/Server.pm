package NgxHarness::Server;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::Server - forked accept loop shared by the recording upstream
and the scripted RESP server

=head1 DESCRIPTION

The listening socket is made in the test process, so the port accepts
connections as soon as C<start> returns; a daemon child (its own process
group, see C<NgxHarness::run_daemon>) accepts and forks one process per
connection, which calls C<< $self->_connection($sock, $conn_no) >> of the
subclass. Methods: C<port>, C<name>, C<pid>, C<start> (again on the same
port after C<stop>), C<stop> (SIGTERM to the group), C<kill> (SIGKILL).

=cut

use strict;
use warnings;

use IO::Select;
use POSIX ();

sub port { $_[0]{port} }
sub name { $_[0]{name} }
sub pid  { $_[0]{pid} }

sub start {
    my ($self) = @_;

    return $self if $self->{pid};

    my $ls = NgxHarness::_listen($self->{port});
    my $owner = $$;

    $self->{pid} = $self->{h}->run_daemon(sub {
        $self->_serve($ls, $owner);
    });

    close $ls;

    return $self;
}

sub stop {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid);
}

sub kill {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid, signal => 'KILL');
}

sub _serve {
    my ($self, $ls, $owner) = @_;

    $0 = "ngx-harness " . ref($self) . " $self->{name}";

    $SIG{PIPE} = 'IGNORE';
    $SIG{CHLD} = 'IGNORE';

    # end the connections first: orphans may never be reaped in a container

    $SIG{TERM} = sub {
        $SIG{TERM} = 'IGNORE';
        CORE::kill('-TERM', $$);
        1 while wait != -1;
        POSIX::_exit(0);
    };

    my $sel = IO::Select->new($ls);
    my $conn_no = 0;

    while (1) {
        POSIX::_exit(0) if getppid() != $owner;

        next unless $sel->can_read(0.5);

        my $c = $ls->accept or next;
        $conn_no++;

        my $pid = fork;

        if (!defined $pid) {
            close $c;
            next;
        }

        if ($pid == 0) {
            $SIG{$_} = 'DEFAULT' for qw(CHLD TERM);
            close $ls;

            eval { $self->_connection($c, $conn_no); 1 }
                or print STDERR "$0: connection $conn_no: $@";

            close $c;
            POSIX::_exit(0);
        }

        close $c;
    }
}

sub _write_all {
    my ($sock, $data) = @_;

    while (length $data) {
        my $n = syswrite($sock, $data);

        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return 0;
        }

        substr($data, 0, $n, '');
    }

    return 1;
}

1;
