package NgxHarness::RESP;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::RESP - the few RESP2 routines the harness needs

=head1 SYNOPSIS

    use NgxHarness::RESP qw(resp_command resp_reply resp_command_parse);

    my $bytes = resp_command('SET', 'k', 'v');
    my ($complete, $value) = resp_reply(\$buf);   # consumes $buf
    my $args = resp_command_parse(\$buf);         # server side

=head1 DESCRIPTION

C<resp_reply> decodes one reply at the start of a buffer and removes it:
simple strings and bulk strings become strings, a null bulk or array
C<undef>, integers numbers, arrays array references and errors a hash
reference C<< { err => 'ERR message' } >>. It returns an empty list when
the buffer holds only part of a reply and dies on bytes that are not RESP.

C<resp_command_parse> decodes one request (an array of bulk strings, or
an inline command line) into an array reference, C<undef> when more bytes
are needed; it dies on a protocol error.

=cut

use strict;
use warnings;

use Exporter qw(import);

our @EXPORT_OK = qw(resp_command resp_reply resp_command_parse);

sub resp_command {
    my @args = @_;

    my $out = '*' . @args . "\r\n";

    for my $arg (@args) {
        my $v = defined $arg ? "$arg" : '';
        utf8::encode($v) if utf8::is_utf8($v);
        $out .= '$' . length($v) . "\r\n" . $v . "\r\n";
    }

    return $out;
}

sub resp_reply {
    my ($buf) = @_;

    my $pos = 0;
    my ($complete, $value) = _parse($buf, \$pos);

    return () unless $complete;

    substr($$buf, 0, $pos, '');
    return (1, $value);
}

sub resp_command_parse {
    my ($buf) = @_;

    while (length $$buf) {

        if (substr($$buf, 0, 1) eq '*') {
            my $pos = 0;
            my ($complete, $value) = _parse($buf, \$pos);

            return undef unless $complete;

            die "RESP protocol error: null or nested command\n"
                if ref $value ne 'ARRAY' || grep { ref } @$value;

            substr($$buf, 0, $pos, '');

            next unless @$value;
            return [ map { defined $_ ? $_ : '' } @$value ];
        }

        # inline command, as typed into telnet

        my $end = index($$buf, "\n");
        return undef if $end < 0;

        my $line = substr($$buf, 0, $end + 1, '');
        $line =~ s/\r?\n\z//;

        my @args = split ' ', $line;
        return \@args if @args;
    }

    return undef;
}

sub _parse {
    my ($buf, $pos) = @_;

    my $end = index($$buf, "\r\n", $$pos);
    return () if $end < 0;

    my $type = substr($$buf, $$pos, 1);
    my $line = substr($$buf, $$pos + 1, $end - $$pos - 1);
    my $next = $end + 2;

    if ($type eq '+') {
        $$pos = $next;
        return (1, $line);
    }

    if ($type eq '-') {
        $$pos = $next;
        return (1, { err => $line });
    }

    if ($type eq ':') {
        die "RESP protocol error: bad integer '$line'\n"
            unless $line =~ /^-?\d+\z/;
        $$pos = $next;
        return (1, 0 + $line);
    }

    if ($type eq '$') {
        die "RESP protocol error: bad bulk length '$line'\n"
            unless $line =~ /^-?\d+\z/;

        if ($line < 0) {
            $$pos = $next;
            return (1, undef);
        }

        return () if length($$buf) < $next + $line + 2;

        die "RESP protocol error: bulk string not terminated\n"
            unless substr($$buf, $next + $line, 2) eq "\r\n";

        $$pos = $next + $line + 2;
        return (1, substr($$buf, $next, $line));
    }

    if ($type eq '*') {
        die "RESP protocol error: bad array length '$line'\n"
            unless $line =~ /^-?\d+\z/;

        if ($line < 0) {
            $$pos = $next;
            return (1, undef);
        }

        my $p = $next;
        my @values;

        for (1 .. $line) {
            my ($complete, $value) = _parse($buf, \$p);
            return () unless $complete;
            push @values, $value;
        }

        $$pos = $p;
        return (1, \@values);
    }

    die "RESP protocol error: unexpected byte "
        . sprintf('0x%02x', ord $type) . "\n";
}

1;
