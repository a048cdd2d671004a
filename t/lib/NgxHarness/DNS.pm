package NgxHarness::DNS;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::DNS - a name server for nginx's resolver in the tests

=head1 SYNOPSIS

    my $dns = NgxHarness::DNS->new($h, 'redis.test' => '127.0.0.1');
    # resolver 127.0.0.1:%%PORT_DNS%% valid=1s ipv6=off;

    $dns->set('redis.test' => '127.0.0.2');    # the next answers
    $dns->queries('redis.test');               # A questions so far

    $dns->hold;        # questions get no answer...
    $dns->release;     # ...until now

=head1 DESCRIPTION

Answers A questions over UDP on C<< $h->port('dns') >> (or the port
named by C<name>) from a table the test changes at any time: a name in
the table gets its address with a TTL of 0, any other name NXDOMAIN,
any other type an empty answer. Every A question is counted when it
comes, so a test can tell that nginx asked. While held, the answer waits
(a slow name server), until C<release>.

=cut

use strict;
use warnings;

use IO::Socket::INET;

sub new {
    my ($class, $h, %records) = @_;

    my $name = delete $records{name} // 'dns';

    my $self = bless {
        h     => $h,
        port  => $h->port($name),
        table => $h->testdir . "/$name.table",
        log   => $h->testdir . "/$name.queries",
    }, $class;

    $self->_write(%records);

    my $sock = IO::Socket::INET->new(
        LocalAddr => '127.0.0.1',
        LocalPort => $self->{port},
        Proto     => 'udp',
    ) or die "dns: bind 127.0.0.1:$self->{port}: $!\n";

    $self->{pid} = $h->run_daemon(sub { $self->_serve($sock) });

    close $sock;

    return $self;
}

sub port { $_[0]{port} }

sub set {
    my ($self, %records) = @_;

    $self->_write(%{ $self->{records} }, %records);
}

sub hold {
    my ($self) = @_;

    open my $fh, '>', "$self->{table}.hold" or die "dns: hold: $!\n";
    close $fh;
}

sub release {
    my ($self) = @_;

    unlink "$self->{table}.hold";
}

sub queries {
    my ($self, $name) = @_;

    open my $fh, '<', $self->{log} or return 0;
    my $n = grep { $_ eq "$name\n" } <$fh>;
    close $fh;

    return $n;
}

sub _write {
    my ($self, %records) = @_;

    $self->{records} = \%records;

    # a rename: the server never reads half a table

    my $tmp = "$self->{table}.tmp";

    open my $fh, '>', $tmp or die "dns: $tmp: $!\n";
    print $fh "$_ $records{$_}\n" for sort keys %records;
    close $fh;

    rename $tmp, $self->{table} or die "dns: rename: $!\n";
}

sub _serve {
    my ($self, $sock) = @_;

    while (1) {
        my $peer = $sock->recv(my $query, 512) // next;
        my $answer = $self->_answer($query) // next;
        $sock->send($answer, 0, $peer);
    }
}

sub _answer {
    my ($self, $query) = @_;

    return undef if length $query < 12;

    my ($id, $flags, $qdcount) = unpack 'n n n', $query;
    return undef if $qdcount != 1 || $flags & 0x8000;

    # the question: labels, then type and class

    my ($off, @labels) = (12);

    while (1) {
        return undef if $off >= length $query;
        my $len = ord substr($query, $off, 1);
        $off++;
        last if $len == 0;
        return undef if $len > 63;
        push @labels, substr($query, $off, $len);
        $off += $len;
    }

    return undef if $off + 4 > length $query;

    my ($type) = unpack 'n', substr($query, $off, 2);
    my $question = substr($query, 12, $off + 4 - 12);
    my $name = lc join '.', @labels;

    my %table;

    if (open my $fh, '<', $self->{table}) {
        %table = map { split ' ' } <$fh>;
        close $fh;
    }

    if ($type == 1 && open my $log, '>>', $self->{log}) {
        print $log "$name\n";
        close $log;
    }

    select(undef, undef, undef, 0.02) while -e "$self->{table}.hold";

    my $rcode = exists $table{$name} ? 0 : 3;
    my @answers;

    if ($type == 1 && $rcode == 0) {
        push @answers, pack('n n n N n', 0xc00c, 1, 1, 0, 4)
                       . pack('C4', split /\./, $table{$name});
    }

    return pack('n n n n n n', $id, 0x8180 | $rcode, 1, scalar @answers,
                0, 0)
           . $question . join '', @answers;
}

1;
