package NgxHarness::Upstream;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::Upstream - recording HTTP/1.1 upstream for the tests

=head1 SYNOPSIS

    my $up = $h->upstream(delay => 0.2);        # port name 'upstream'
    ...
    my @reqs = $up->requests;                   # arrival order
    is($reqs[0]{body}, $sent, 'body untouched');

=head1 DESCRIPTION

One process per connection, so requests overlap; keep-alive,
C<Content-Length> and chunked request bodies, C<Expect: 100-continue>.

Options: C<name> (port name, default C<upstream>), C<delay> (seconds
before answering), C<status> (default 200), C<body> (default
C<{"ok":true}>), C<headers> (extra response headers, hash),
C<handler> (C<< sub { my ($req) = @_; return ($status, \%headers, $body) } >>,
called after the delay in the connection's process; an empty list keeps
the defaults; state shared between connections must live in files).

Per request, a header wins over a query parameter, which wins over the
options: C<X-Test-Delay: 0.3> / C<?delay=0.3>, C<X-Test-Status: 500> /
C<?status=500>, C<X-Test-Close: 1> / C<?close=1> (close the connection
without an answer), C<X-Test-Hold: NAME> / C<?hold=NAME> (hold the
request, before its delay, until the test calls C<release(NAME)>; at
most C<hold_timeout> seconds, 120 by default).

Each request is also noted (one line, C<TESTDIR/upstream-NAME.arrived>)
as soon as it has been read, before any hold or delay: C<arrived> counts
those lines, C<wait_arrived($n, $timeout)> waits for C<$n> of them.

Each request is appended (under C<flock>) as one JSON line to
C<TESTDIR/upstream-NAME.log> before the response is written, so it is
there when the client sees the response:
C<method uri version headers body arrived finished conn seq pid port
status closed peer_closed incomplete>. C<arrived> is when the first byte
came, C<finished> when the answer was ready (after the delay);
C<peer_closed> is the time the peer closed the connection during the
delay, or 0; C<conn> is the connection number, C<seq> the request number
on that connection.

Methods: C<requests> (decoded, body bytes restored, sorted by arrival),
C<wait_requests($n, $timeout)>, C<arrived>, C<wait_arrived($n, $timeout)>,
C<release($hold)>, C<clear> (the requests and the arrivals), C<log_file>,
and those of L<NgxHarness::Server>. Timeouts are scaled by the harness's
C<slowness>.

=cut

use strict;
use warnings;

use parent 'NgxHarness::Server';

use Fcntl qw(:flock);
use IO::Select;
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use Socket ();
use Time::HiRes qw(time sleep);

use NgxHarness::HTTP;

my %REASON = (
    200 => 'OK', 201 => 'Created', 202 => 'Accepted', 204 => 'No Content',
    301 => 'Moved Permanently', 302 => 'Found', 304 => 'Not Modified',
    400 => 'Bad Request', 401 => 'Unauthorized', 403 => 'Forbidden',
    404 => 'Not Found', 409 => 'Conflict', 413 => 'Payload Too Large',
    415 => 'Unsupported Media Type', 422 => 'Unprocessable Entity',
    429 => 'Too Many Requests', 500 => 'Internal Server Error',
    502 => 'Bad Gateway', 503 => 'Service Unavailable',
    504 => 'Gateway Timeout',
);

sub new {
    my ($class, $h, %opts) = @_;

    my $name = lc($opts{name} // 'upstream');

    my $self = bless {
        h    => $h,
        name => $name,
        port => $h->port($name),
        log  => $h->testdir . "/upstream-$name.log",
        opts => \%opts,
    }, $class;

    return $self->start;
}

sub log_file { $_[0]{log} }

sub _arrived_file { $_[0]{h}->testdir . "/upstream-$_[0]{name}.arrived" }

sub _release_file {
    my ($self, $hold) = @_;

    $hold =~ s/[^\w.-]/_/g;

    return $self->{h}->testdir . "/upstream-$self->{name}.release-$hold";
}

sub release {
    my ($self, $hold) = @_;

    open my $fh, '>', $self->_release_file($hold) or die "release: $!\n";
    close $fh;
}

sub arrived {
    my ($self) = @_;

    open my $fh, '<', $self->_arrived_file or return 0;
    flock $fh, LOCK_SH;

    my $n = 0;
    $n++ while <$fh>;
    close $fh;

    return $n;
}

sub wait_arrived {
    my ($self, $n, $timeout) = @_;

    return $self->{h}->wait_for(sub { $self->arrived >= $n },
                                timeout => $timeout // 30);
}

sub requests {
    my ($self) = @_;

    open my $fh, '<', $self->{log} or return wantarray ? () : 0;
    flock $fh, LOCK_SH;

    my @reqs;

    while (my $line = <$fh>) {
        my $r = eval { JSON::PP::decode_json($line) } or next;
        $r->{body} = decode_base64($r->{body} // '');
        push @reqs, $r;
    }

    close $fh;

    # in scalar context: how many
    return wantarray ? sort { $a->{arrived} <=> $b->{arrived} } @reqs
                     : scalar @reqs;
}

sub wait_requests {
    my ($self, $n, $timeout) = @_;

    my $deadline = time + ($timeout // 5) * $self->{h}->slowness;
    my @reqs;

    while (1) {
        @reqs = $self->requests;
        return @reqs if @reqs >= $n || time >= $deadline;
        sleep 0.02;
    }
}

sub clear {
    my ($self) = @_;

    for my $file ($self->{log}, $self->_arrived_file) {
        open my $fh, '+<', $file or next;
        flock $fh, LOCK_EX;
        truncate $fh, 0;
        close $fh;
    }
}

sub _connection {
    my ($self, $c, $conn_no) = @_;

    my $o = $self->{opts};
    my $rd = NgxHarness::HTTP->new($c);
    my $seq = 0;

    while (1) {
        $rd->deadline(time + 300);

        if (!$rd->buffered) {
            last if $rd->fill ne 'data';
        }

        my $arrived = time;

        my ($head) = $rd->head;
        last unless defined $head;

        my ($start, undef, $hdr) = NgxHarness::HTTP::parse_head($head);
        my ($method, $uri, $version) = split ' ', $start;
        $version //= 'HTTP/0.9';

        if (($hdr->{expect} // '') =~ /100-continue/i) {
            NgxHarness::Server::_write_all($c, "HTTP/1.1 100 Continue\r\n\r\n");
        }

        my ($body, $err) = $rd->body($hdr, 0);

        my %q = _query($uri);
        my $delay = $hdr->{'x-test-delay'} // $q{delay} // $o->{delay} // 0;
        my $status = $hdr->{'x-test-status'} // $q{status} // $o->{status}
                     // 200;
        my $close = $hdr->{'x-test-close'} // $q{close} // $o->{close} // 0;

        my %req = (
            method  => $method,
            uri     => $uri,
            version => $version,
            headers => $hdr,
            body    => $body,
            arrived => $arrived,
            conn    => $conn_no,
            seq     => ++$seq,
            pid     => $$,
            port    => $self->{port},
        );

        $req{incomplete} = $err if $err;

        $self->_note_arrival(\%req);

        my $hold = $hdr->{'x-test-hold'} // $q{hold} // $o->{hold};

        if (defined $hold && length $hold) {
            $req{held} = $self->_hold($hold);
        }

        $req{peer_closed} = _pause($c, $delay);

        my %rh = ('Content-Type' => 'application/json',
                  %{ $o->{headers} || {} });
        my $rbody = $o->{body} // '{"ok":true}';

        if ($o->{handler} && !$err) {
            my @r = $o->{handler}->({ %req });

            if (@r && defined $r[0]) {
                $status = $r[0];
                %rh = (%rh, %{ $r[1] || {} });
                $rbody = $r[2] // '';
            }
        }

        $req{finished} = time;
        $req{closed} = ($close || $err) ? 1 : 0;
        $req{status} = $req{closed} ? undef : 0 + $status;

        $self->_record(\%req);

        last if $req{closed};

        my $keepalive = lc($hdr->{connection} // '');
        $keepalive = $version eq 'HTTP/1.1' ? $keepalive !~ /close/
                                            : $keepalive =~ /keep-alive/;

        my $resp = "HTTP/1.1 $status " . ($REASON{$status} // 'Status')
                   . "\r\n";

        for my $name (sort keys %rh) {
            $resp .= "$name: $rh{$name}\r\n" if defined $rh{$name};
        }

        $rbody = '' if $status == 204 || $status == 304;

        $resp .= "Content-Length: " . length($rbody) . "\r\n"
            unless $status == 204 || $status == 304;
        $resp .= "Connection: " . ($keepalive ? 'keep-alive' : 'close')
                 . "\r\n\r\n";
        $resp .= $rbody unless $method eq 'HEAD';

        last unless NgxHarness::Server::_write_all($c, $resp);
        last unless $keepalive;
    }
}

# sleeps, noting when the peer closes the connection meanwhile

sub _pause {
    my ($c, $delay) = @_;

    my $end = time + ($delay || 0);
    my $sel = IO::Select->new($c);

    while ((my $left = $end - time) > 0) {

        if (!$sel->can_read($left)) {
            next;
        }

        my $data = '';
        my $rc = recv($c, $data, 1, Socket::MSG_PEEK());

        if (!defined $rc || $data eq '') {
            my $at = time;
            sleep($end - time) if $end > time;
            return $at;
        }

        # pipelined bytes: they wait for their turn

        sleep($end - time) if $end > time;
        last;
    }

    return 0;
}

sub _note_arrival {
    my ($self, $req) = @_;

    open my $fh, '>>', $self->_arrived_file or die "arrived: $!\n";
    flock $fh, LOCK_EX;
    syswrite $fh, "$req->{arrived} $req->{pid} $req->{seq}\n";
    close $fh;
}

# until the test releases the hold: the seconds it took

sub _hold {
    my ($self, $hold) = @_;

    my $file = $self->_release_file($hold);
    my $start = time;
    my $end = $start + ($self->{opts}{hold_timeout} // 120);

    sleep 0.02 until -e $file || time >= $end;

    return time - $start;
}

sub _record {
    my ($self, $req) = @_;

    my $line = JSON::PP->new->utf8->canonical->encode({
        %$req,
        body => encode_base64($req->{body} // '', ''),
    });

    open my $fh, '>>', $self->{log} or die "$self->{log}: $!\n";
    flock $fh, LOCK_EX;
    syswrite $fh, "$line\n";
    close $fh;
}

sub _query {
    my ($uri) = @_;

    my (undef, $query) = split /\?/, $uri, 2;
    my %q;

    for my $pair (split /[&;]/, $query // '') {
        my ($k, $v) = split /=/, $pair, 2;
        next unless defined $k && length $k;

        for ($k, $v) {
            next unless defined;
            tr/+/ /;
            s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
        }

        $q{$k} = $v // '';
    }

    return %q;
}

1;
