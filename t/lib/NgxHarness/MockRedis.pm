package NgxHarness::MockRedis;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness::MockRedis - scripted RESP server for Redis faults

=head1 SYNOPSIS

    my $mock = $h->mock_redis(['EVALSHA' => ':0']);   # flat pairs
    my $mock = $h->mock_redis(
        name  => 'mock_redis',                        # %%PORT_MOCK_REDIS%%
        rules => [
            [ 'SET'     => { reply => '$-1' } ],
            [ 'EVALSHA' => { reply => '-NOSCRIPT No matching script',
                             times => 1 } ],
            [ '*'       => { hang => 1 } ],
        ],
    );

    my @cmds = $mock->commands;          # { cmd => [...], name, conn, at }
    my @sets = $mock->commands('SET');
    $mock->set_rules([ '*' => { close => 1 } ]);   # live, next command

=head1 DESCRIPTION

Parses pipelined RESP arrays (and inline commands) and answers in order.
Every command is recorded first (JSON lines in
C<TESTDIR/mock-NAME.log>), then the first matching rule acts. A rule name
is matched against the uppercased command name, or C<'NAME SUB'> for two
words (C<'SCRIPT LOAD'>), or C<*> for any. Actions, applied in this
order:

    match => qr/.../   rule applies only if join(' ', @cmd) matches
    times => N         rule applies to its first N matches only (shared
                       by all connections)
    delay => SECS      sleep, then do the rest
    hang  => 1         never answer this or any later command on this
                       connection (keeps reading and recording)
    close => 1         close the connection without answering
    garbage => 1       answer "?garbage\r\n" (not RESP)
    raw   => BYTES     answer exactly these bytes
    reply => RESP      answer this RESP text; "\r\n" is appended when
                       missing; a code ref gets the command (array ref)
                       and returns the RESP text (or undef: default)

A plain string instead of the hash means C<< { reply => STRING } >>.
Default answers: PING C<+PONG>, SCRIPT LOAD the script's SHA1, GET
C<$-1>, EVAL, EVALSHA, DEL, UNLINK, EXISTS, EXPIRE, PEXPIRE, INCR C<:1>,
anything else C<+OK>.

C<set_rules> replaces the rules in running connections at their next
command (no code refs there; regexes travel as strings); C<times>
counters start again. C<clear> empties the record. C<start>, C<stop>,
C<kill>, C<port> as in L<NgxHarness::Server>; C<start> after C<stop>
keeps the current rules.

=cut

use strict;
use warnings;

use parent 'NgxHarness::Server';

use Digest::SHA qw(sha1_hex);
use Fcntl qw(:flock O_RDWR O_CREAT);
use IO::Select;
use JSON::PP ();
use Time::HiRes qw(time sleep);

use NgxHarness::RESP qw(resp_command_parse);

sub new {
    my ($class, $h, @args) = @_;

    my %opts = @args == 1 ? (rules => $args[0]) : @args;
    my $name = lc($opts{name} // 'mock_redis');
    my $dir = $h->testdir;

    my $self = bless {
        h          => $h,
        name       => $name,
        port       => $h->port($name),
        log        => "$dir/mock-$name.log",
        rules_file => "$dir/mock-$name.rules.json",
        rules      => _normalize($opts{rules} || []),
        gen        => 0,
    }, $class;

    return $self->start;
}

sub log_file { $_[0]{log} }

sub set_rules {
    my ($self, $rules) = @_;

    $rules = _normalize($rules);

    for my $r (@$rules) {
        die "set_rules: code refs cannot be sent to a running server\n"
            if grep { ref eq 'CODE' } values %{ $r->[1] };
    }

    $self->{rules} = $rules;
    $self->{gen}++;

    my $json = JSON::PP->new->utf8->canonical->encode({
        gen   => $self->{gen},
        rules => [ map {
            my %a = %{ $_->[1] };
            $a{match} = "$a{match}" if defined $a{match};
            [ $_->[0], \%a ];
        } @$rules ],
    });

    my $tmp = "$self->{rules_file}.$$";

    open my $fh, '>', $tmp or die "$tmp: $!\n";
    print $fh $json;
    close $fh;

    rename $tmp, $self->{rules_file} or die "rename $tmp: $!\n";
}

sub commands {
    my ($self, $name) = @_;

    open my $fh, '<', $self->{log} or return ();
    flock $fh, LOCK_SH;

    my @cmds;

    while (my $line = <$fh>) {
        my $c = eval { JSON::PP::decode_json($line) } or next;
        next if defined $name && $c->{name} ne uc $name;
        push @cmds, $c;
    }

    close $fh;

    return @cmds;
}

sub clear {
    my ($self) = @_;

    open my $fh, '+<', $self->{log} or return;
    flock $fh, LOCK_EX;
    truncate $fh, 0;
    close $fh;
}

sub _normalize {
    my ($rules) = @_;

    my @in = @$rules;
    my @pairs;

    if (@in && ref $in[0] eq 'ARRAY') {
        @pairs = @in;

    } else {
        die "mock_redis: odd number of elements in rules\n" if @in % 2;
        push @pairs, [ splice @in, 0, 2 ] while @in;
    }

    return [ map {
        my ($name, $action) = @$_;
        $action = { reply => $action } unless ref $action eq 'HASH';
        [ uc $name, { %$action } ];
    } @pairs ];
}

sub _connection {
    my ($self, $c, $conn_no) = @_;

    my $sel = IO::Select->new($c);
    my $buf = '';
    my $hung = 0;

    while (1) {

        while (1) {
            my $cmd = eval { resp_command_parse(\$buf) };

            if ($@) {
                NgxHarness::Server::_write_all($c, "-ERR Protocol error\r\n")
                    unless $hung;
                return;
            }

            last unless $cmd;

            $self->_record($cmd, $conn_no);

            next if $hung;

            my $rule = $self->_match($cmd);

            sleep $rule->{delay} if $rule->{delay};

            if ($rule->{hang}) {
                $hung = 1;
                next;
            }

            return if $rule->{close};

            my $out = $rule->{garbage}      ? "?garbage\r\n"
                    : defined $rule->{raw}  ? $rule->{raw}
                    : _reply($rule->{reply}, $cmd);

            return unless NgxHarness::Server::_write_all($c, $out);
        }

        next unless $sel->can_read(1);

        my $n = sysread($c, my $data, 65536);

        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return;
        }

        return if $n == 0;

        $buf .= $data;
    }
}

sub _match {
    my ($self, $cmd) = @_;

    $self->_reload_rules;

    my $name = uc $cmd->[0];
    my $two = @$cmd > 1 ? "$name " . uc $cmd->[1] : $name;
    my $rules = $self->{rules};

    for my $i (0 .. $#$rules) {
        my ($rn, $act) = @{ $rules->[$i] };

        next unless $rn eq '*' || $rn eq $name || $rn eq $two;

        next if defined $act->{match}
                && join(' ', @$cmd) !~ /$act->{match}/;

        next if $act->{times} && !$self->_take($i, $act->{times});

        return $act;
    }

    return {};
}

sub _reload_rules {
    my ($self) = @_;

    my @st = stat $self->{rules_file} or return;
    my $id = join ':', @st[1, 7, 9];

    return if defined $self->{rules_id} && $self->{rules_id} eq $id;

    open my $fh, '<', $self->{rules_file} or return;
    my $json = do { local $/; <$fh> };
    close $fh;

    my $r = eval { JSON::PP::decode_json($json) } or return;

    $self->{rules_id} = $id;
    $self->{rules} = $r->{rules};
    $self->{gen} = $r->{gen};
}

# a counter per rule shared by all connection processes

sub _take {
    my ($self, $i, $times) = @_;

    my $file = "$self->{log}.$self->{gen}.$i.count";

    sysopen my $fh, $file, O_RDWR | O_CREAT or die "$file: $!\n";
    flock $fh, LOCK_EX;

    my $n = <$fh> // 0;
    chomp $n;

    my $ok = $n < $times;

    if ($ok) {
        seek $fh, 0, 0;
        truncate $fh, 0;
        syswrite $fh, $n + 1;
    }

    close $fh;

    return $ok;
}

sub _record {
    my ($self, $cmd, $conn_no) = @_;

    my $line = JSON::PP->new->utf8->canonical->encode({
        cmd  => $cmd,
        name => uc $cmd->[0],
        conn => $conn_no,
        at   => time,
    });

    open my $fh, '>>', $self->{log} or die "$self->{log}: $!\n";
    flock $fh, LOCK_EX;
    syswrite $fh, "$line\n";
    close $fh;
}

sub _reply {
    my ($reply, $cmd) = @_;

    $reply = $reply->($cmd) if ref $reply eq 'CODE';
    $reply //= _default_reply($cmd);
    $reply .= "\r\n" unless $reply =~ /\r\n\z/;

    return $reply;
}

sub _default_reply {
    my ($cmd) = @_;

    my $name = uc $cmd->[0];

    return "+PONG\r\n" if $name eq 'PING';

    if ($name eq 'SCRIPT' && uc($cmd->[1] // '') eq 'LOAD') {
        return "\$40\r\n" . sha1_hex($cmd->[2] // '') . "\r\n";
    }

    return "\$-1\r\n" if $name eq 'GET';

    return ":1\r\n"
        if $name =~ /^(?:EVAL|EVALSHA|DEL|UNLINK|EXISTS|EXPIRE|PEXPIRE
                        |INCR)\z/x;

    return "+OK\r\n";
}

1;
