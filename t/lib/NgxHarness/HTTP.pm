package NgxHarness::HTTP;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::HTTP - HTTP/1.x message reader shared by the client and the
recording upstream

=head1 SYNOPSIS

    my $rd = NgxHarness::HTTP->new($sock, raw => 1);
    $rd->deadline(time + 10);

    my ($head, $err) = $rd->head;          # err: 'eof' or 'timeout'
    my ($line, $pairs, $headers) = NgxHarness::HTTP::parse_head($head);
    my ($body, $err) = $rd->body($headers, $until_close);

=head1 DESCRIPTION

Reads with C<sysread> after C<IO::Select> until a deadline, so nothing
blocks past it. Bodies are delimited by C<Transfer-Encoding: chunked>
(trailers are read and dropped), by C<Content-Length>, or, when
C<$until_close> is true (responses), by the end of the connection.
Header names are lowercased; repeated headers are joined with C<', '>.

=cut

use strict;
use warnings;

use IO::Select;
use Time::HiRes qw(time);

sub new {
    my ($class, $sock, %opts) = @_;

    return bless {
        sock     => $sock,
        buf      => '',
        raw      => $opts{raw} ? '' : undef,
        deadline => time + 60,
    }, $class;
}

sub deadline {
    my ($self, $deadline) = @_;
    $self->{deadline} = $deadline;
}

sub buffered {
    my ($self) = @_;
    return length $self->{buf};
}

sub raw {
    my ($self) = @_;
    return $self->{raw};
}

# one read: 'data', 'eof' or 'timeout'

sub fill {
    my ($self) = @_;

    my $sel = IO::Select->new($self->{sock});

    while (1) {
        my $left = $self->{deadline} - time;
        return 'timeout' if $left <= 0;

        next unless $sel->can_read($left);

        my $n = sysread($self->{sock}, my $data, 65536);

        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return 'eof';
        }

        return 'eof' if $n == 0;

        $self->{buf} .= $data;
        $self->{raw} .= $data if defined $self->{raw};

        return 'data';
    }
}

sub head {
    my ($self) = @_;

    while (1) {
        $self->{buf} =~ s/\A(?:\r\n)+//;

        my $i = index($self->{buf}, "\r\n\r\n");

        return substr($self->{buf}, 0, $i + 4, '') if $i >= 0;

        my $rc = $self->fill;
        return (undef, $rc) if $rc ne 'data';
    }
}

sub line {
    my ($self) = @_;

    while (1) {
        my $i = index($self->{buf}, "\r\n");

        if ($i >= 0) {
            my $line = substr($self->{buf}, 0, $i + 2, '');
            return substr($line, 0, $i);
        }

        my $rc = $self->fill;
        return (undef, $rc) if $rc ne 'data';
    }
}

sub bytes {
    my ($self, $n) = @_;

    while (length $self->{buf} < $n) {
        my $rc = $self->fill;
        return (substr($self->{buf}, 0, length $self->{buf}, ''), $rc)
            if $rc ne 'data';
    }

    return substr($self->{buf}, 0, $n, '');
}

sub body {
    my ($self, $headers, $until_close) = @_;

    if (($headers->{'transfer-encoding'} // '') =~ /chunked/i) {
        return $self->_chunked;
    }

    if (defined $headers->{'content-length'}) {
        my ($len) = $headers->{'content-length'} =~ /^\s*(\d+)/;
        return $self->bytes($len // 0);
    }

    return '' unless $until_close;

    while (1) {
        my $rc = $self->fill;
        next if $rc eq 'data';

        my $body = substr($self->{buf}, 0, length $self->{buf}, '');
        return $rc eq 'eof' ? $body : ($body, $rc);
    }
}

sub _chunked {
    my ($self) = @_;

    my $body = '';

    while (1) {
        my ($line, $err) = $self->line;
        return ($body, $err) unless defined $line;

        my ($size) = $line =~ /^\s*([0-9a-fA-F]+)/;
        return ($body, 'bad chunk') unless defined $size;

        $size = hex $size;
        last if $size == 0;

        my ($data, $derr) = $self->bytes($size + 2);
        $body .= substr($data, 0, $size);
        return ($body, $derr) if $derr;
    }

    # trailers up to the empty line

    while (1) {
        my ($line, $err) = $self->line;
        return ($body, $err) unless defined $line;
        last if $line eq '';
    }

    return $body;
}

sub parse_head {
    my ($head) = @_;

    my @lines = split /\r\n/, $head;
    my $start = shift @lines // '';
    my (@pairs, %headers);

    for my $l (@lines) {
        next unless $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*\z/;

        my ($name, $value) = (lc $1, $2);

        push @pairs, [ $name, $value ];
        $headers{$name} = exists $headers{$name}
                          ? "$headers{$name}, $value" : $value;
    }

    return ($start, \@pairs, \%headers);
}

1;
