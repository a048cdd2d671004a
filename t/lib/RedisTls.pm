package RedisTls;

# (C) The webhook_lock authors

=head1 NAME

RedisTls - certificates made at run time, and a redis-server over TLS

=head1 SYNOPSIS

    my $h = NgxHarness->new(needs => [qw/proxy redis/]);
    my $pki = RedisTls::pki($h);      # in TESTDIR/pki
    my $r = RedisTls->new($h, pki => $pki, auth_clients => 'no');

    # webhook_redis rediss://localhost:%%PORT_REDIS_TLS%%
    #               tls_ca=$pki->{ca};

    is($r->cli(qw/SET k v/), 'OK');

=head1 DESCRIPTION

C<pki($h)> makes, with the openssl command, in C<TESTDIR/pki>: a CA
(C<ca>), a server certificate it signs for C<localhost> and C<127.0.0.1>
(C<cert>, C<key>), a client certificate it signs (C<client_cert>,
C<client_key>), and a second, unrelated CA (C<other_ca>). Returns those
paths in a hash; skips the whole file when openssl is missing. P-256 keys:
quick to make.

C<< RedisTls->new($h, %opts) >> starts C<redis-server --port 0 --tls-port
N> with the server certificate, on C<< $h->port($name) >> (C<name>,
default C<redis_tls>), and waits until C<redis-cli --tls> gets PONG. Skips
the file when redis-server or redis-cli lacks TLS. Options: C<pki>
(required), C<auth_clients> (C<no>, the default, C<yes> or C<optional>),
C<password>, C<args> (more redis-server arguments). C<port>, C<pid>,
C<stop> (SIGTERM, waits), C<kill>, C<start> (again, same port).

C<< $r->cli(@args) >> runs one command through C<redis-cli --tls> with
the client certificate (C<AUTH> with the password, if any) and returns
its output, without the blanks that end it.

=cut

use strict;
use warnings;

use Time::HiRes qw(time sleep);

sub pki {
    my ($h) = @_;

    my $openssl = NgxHarness::_which('openssl')
                  || $h->_skip('openssl not found in PATH');

    my $dir = $h->testdir . '/pki';
    mkdir $dir;

    my %p = map { $_ => "$dir/$_.pem" }
            qw/ca ca_key cert key client_cert client_key other_ca
               other_ca_key/;

    my $run = sub {
        my $out = qx{$openssl @_ 2>&1};
        die "openssl @_: $out" if $?;
    };

    my $ec = '-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes';

    for my $ca (qw/ca other_ca/) {
        $run->("req -x509 $ec -days 2 -subj '/CN=webhook_lock test $ca'"
               . " -keyout $p{\"${ca}_key\"} -out $p{$ca}");
    }

    my $ext = "$dir/server.ext";
    $h->write_file('pki/server.ext',
                   "subjectAltName=DNS:localhost,IP:127.0.0.1\n"
                   . "extendedKeyUsage=serverAuth\n");

    my $cext = "$dir/client.ext";
    $h->write_file('pki/client.ext', "extendedKeyUsage=clientAuth\n");

    for my $c ([qw/cert key localhost/, $ext],
               [qw/client_cert client_key webhook_lock/, $cext])
    {
        my ($cert, $key, $cn, $extfile) = @$c;

        $run->("req -new $ec -subj '/CN=$cn' -keyout $p{$key}"
               . " -out $dir/$cert.csr");
        $run->("x509 -req -days 2 -in $dir/$cert.csr -CA $p{ca}"
               . " -CAkey $p{ca_key} -CAcreateserial -extfile $extfile"
               . " -out $p{$cert}");
    }

    chmod 0644, values %p;

    return \%p;
}

sub new {
    my ($class, $h, %opts) = @_;

    my $self = bless {
        h            => $h,
        pki          => $opts{pki} || die("pki needed\n"),
        name         => lc($opts{name} // 'redis_tls'),
        auth_clients => $opts{auth_clients} // 'no',
        password     => $opts{password},
        args         => $opts{args} || [],
    }, $class;

    $self->{bin} = $ENV{TEST_NGINX_REDIS_SERVER}
                   || NgxHarness::_which('redis-server')
                   || $h->_skip('redis-server not found in PATH');

    $self->{cli} = NgxHarness::_which('redis-cli')
                   || $h->_skip('redis-cli not found in PATH');

    $h->_skip('redis-cli without TLS')
        unless qx{$self->{cli} --help 2>&1} =~ /--tls\b/;

    $self->{port} = $h->port($self->{name});

    return $self->start;
}

sub port     { $_[0]{port} }
sub pid      { $_[0]{pid} }
sub password { $_[0]{password} }

sub start {
    my ($self) = @_;

    return $self if $self->{pid};

    my $h = $self->{h};
    my $p = $self->{pki};
    my $log = $h->testdir . "/$self->{name}.log";

    my @cmd = ($self->{bin}, '--port', 0, '--tls-port', $self->{port},
               '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no',
               '--dir', $h->testdir, '--daemonize', 'no',
               '--tls-cert-file', $p->{cert}, '--tls-key-file', $p->{key},
               '--tls-ca-cert-file', $p->{ca},
               '--tls-auth-clients', $self->{auth_clients});

    push @cmd, '--requirepass', $self->{password}
        if defined $self->{password};

    push @cmd, @{ $self->{args} };

    $self->{pid} = $h->run_daemon(sub {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', $log;
        open STDERR, '>&', \*STDOUT;
        exec { $cmd[0] } @cmd or die "exec $cmd[0]: $!\n";
    });

    my $deadline = time + 10 * $h->slowness;

    while (time < $deadline) {
        return $self if ($self->cli('PING') // '') eq 'PONG';
        sleep 0.05;
    }

    $self->kill;
    die "redis-server did not start with TLS on port $self->{port}:\n"
        . (NgxHarness::_slurp($log) // '');
}

sub stop {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid, timeout => 5);
}

sub kill {
    my ($self) = @_;

    my $pid = delete $self->{pid} or return 1;
    return $self->{h}->stop_daemon($pid, signal => 'KILL');
}

sub cli {
    my ($self, @args) = @_;

    my $p = $self->{pki};

    my @cmd = ($self->{cli}, '--tls', '--cacert', $p->{ca},
               '--cert', $p->{client_cert}, '--key', $p->{client_key},
               '-h', '127.0.0.1', '-p', $self->{port});

    push @cmd, '-a', $self->{password}, '--no-auth-warning'
        if defined $self->{password};

    my $pid = open(my $fh, '-|') // die "fork: $!\n";

    if (!$pid) {
        open STDERR, '>', '/dev/null';
        exec { $cmd[0] } @cmd, @args or exit 127;
    }

    local $/;
    my $out = <$fh>;
    close $fh;

    return undef unless defined $out;

    $out =~ s/\s+\z//;
    return $out;
}

1;
