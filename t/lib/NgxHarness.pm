package NgxHarness;

# (C) The webhook_lock authors

=head1 NAME

NgxHarness - run nginx with ngx_http_webhook_lock_module in tests

=head1 SYNOPSIS

    use FindBin;
    use lib "$FindBin::Bin/lib";
    use Test::More;
    use NgxHarness;

    my $h = NgxHarness->new(needs => [qw/proxy/]);
    my $redis = $h->mock_redis(['EVALSHA' => ':0']);
    my $up = $h->upstream(delay => 0.2);

    $h->start(<<'EOF');
        webhook_redis 127.0.0.1:%%PORT_MOCK_REDIS%%;
        server {
            listen 127.0.0.1:%%PORT_NGINX%%;
            location /hook {
                webhook_lock json;
                proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
            }
        }
    EOF

    my $res = $h->request(POST => '/hook', body => '{"id":"a"}');
    is($res->{status}, 503, 'rejected');
    is($res->{headers}{'retry-after'}, '30', 'retry-after set');

    $h->done;     # final log checks, stops everything, done_testing

=head1 API

=head2 Setup

C<< NgxHarness->new(%opts) >>: C<module> (default: C<TEST_NGINX_MODULE>
or C<REPO/build/ngx_http_webhook_lock_module.so>; C<0> for plain nginx;
or a path), C<needs> (array ref: C<proxy>, C<rewrite>, any C<http_*>
module name, C<debug>, C<redis>). Skips the whole file (C<plan skip_all>)
when nginx, the module, a need or redis-server is missing.
C<TEST_NGINX_BINARY> names nginx (default C</usr/sbin/nginx>).

C<< $h->testdir >>, C<< $h->port($name) >> (a free port, the same for a
name on every call; C<nginx> by default; C<< $h->port($name, $number) >>
names a port taken elsewhere, such as another harness's daemon),
C<< $h->url($path) >>,
C<< $h->write_file($relpath, $bytes) >> (returns the full path),
C<< $h->read_file($relpath) >> (the bytes, or an empty string).

=head2 nginx

C<< $h->start($http_body, main => $lines, events => $lines) >>: the
template is the inside of C<http {}>; C<%%PORT_NAME%%> becomes
C<< $h->port(lc NAME) >>, C<%%TESTDIR%%> the test directory. The harness
adds C<load_module>, C<pid>, C<error_log TESTDIR/error.log debug>,
C<daemon off>, C<master_process on>, C<worker_processes 1> (unless
C<main> sets one), C<events { worker_connections 1024; }> and, in http,
C<access_log> and all C<*_temp_path> under TESTDIR (do not repeat those
at http level). Waits up to 5 s for the pid file and, when the template
uses C<%%PORT_NGINX%%>, for that port; dies with the logs otherwise.
Returns C<$h>.

Readiness: when some location locks (C<webhook_lock>) and
C<webhook_redis> names a redis-server of the harness (C<< $h->redis >>,
any harness of the file) that runs, C<start> also adds a server of its
own with C<webhook_status> on C<< $h->port('harness_status') >> and
returns only once every worker is connected to Redis
(C<webhook_lock_redis_connected_workers>, up to 30 s), so that no first
request meets a worker still connecting; it dies otherwise.
C<< ready => 0 >> leaves that out (a Redis meant to be unreachable).
C<< $h->status >> is that server's C<webhook_status>, decoded from JSON.

C<< $h->stop(timeout => 5) >>: QUIT, then TERM, then KILL; true when QUIT
was enough. C<< $h->reload($http_body?, %opts) >>: HUP (with a new
template first, if given); true once new workers run and the old ones
are gone (C<< wait_old => 0 >>: once new workers run) and, as for
C<start>, connected to Redis (C<< ready => 0 >> does not wait), false
on timeout (C<timeout>, 5 s) or an C<[emerg]>. C<< $h->master_pid >>,
C<< $h->worker_pids >>.

C<< $h->config_ok($http_body, $name, %opts) >> and
C<< $h->config_fails($http_body, qr/message/, $name, %opts) >> run
C<nginx -t> on a separate config: one test each; they return the output.

=head2 Daemons

C<< $h->redis(%opts) >> (L<NgxHarness::Redis>; C<< class => NAME >>: a
subclass of it, such as a sentinel of F<t/lib/RedisSentinel.pm>),
C<< $h->mock_redis(%opts | \@rules) >> (L<NgxHarness::MockRedis>),
C<< $h->upstream(%opts) >> (L<NgxHarness::Upstream>),
C<< $h->run_daemon(sub { ... }, @args) >> (forks, own process group;
returns the pid), C<< $h->stop_daemon($pid, signal => 'TERM') >>.
All are killed at C<done> and at the end of the test.

=head2 Client

C<< $h->request($method, $uri, %opts) >> returns
C<< { status, reason, version, headers => { lc name => value },
header_lines => [[lc name, value], ...], body, raw, error } >>, or
C<undef> with C<abort_after> or C<abort_on>. C<status> is C<undef> and
C<error> set (C<timeout>, C<eof>, C<connect: ...>) when no full answer
came. Options: C<headers> (hash or array ref of pairs; C<undef> value: do
not send the default header), C<body>, C<chunked>, C<chunk_size> (1024),
C<slow> (seconds before each body piece), C<abort_after> (seconds; close
without reading), C<abort_on> (a path: close without reading once that
file exists, at most C<timeout> seconds after sending), C<timeout> (10),
C<port> (number or name), C<raw> (send these bytes as the whole request;
an array ref: these pieces, C<slow> apart), C<version> (C<HTTP/1.1>).
Defaults:
C<Host: localhost>, C<Connection: close>, C<Content-Type:
application/json> with a body, C<Content-Length> or chunked framing.

C<< $h->request_async(...) >> takes the same arguments plus C<at> (an
absolute C<Time::HiRes::time> to send at) and returns a handle;
C<< $h->wait_all(@handles) >> returns the responses in the same order;
C<< $h->done_async($handle) >> is true once that response is in.

=head2 Logs and the end

C<< $h->error_log($since) >>, C<< $h->log_mark >> (an offset for
C<$since>), C<< $h->access_log >>,
C<< $h->error_log_like(qr//, $name, timeout => 2, since => $mark) >>
(polls), C<< $h->no_error_log(qr//, $name, since => $mark) >>.

Every test file ends with C<< $h->done(allow => qr//) >>: it stops nginx
and the daemons and, when nginx ran, adds two tests: no C<[alert]>,
C<[crit]> or C<[emerg]> in the error log (except lines matching
C<allow>), and no sanitizer report in the error log or nginx's
stdout/stderr (C<TESTDIR/stderr.log>); then calls C<done_testing>.

Several nginx at once (a cluster sharing one Redis): one harness each,
with the shared daemons' ports named in the others (C<port>); each ends
with its C<done>, and C<done_testing> comes with the last of them (or at
exit, when a harness is stopped without its C<done>).
C<< my @nodes = NgxHarness->nodes(2, %new_opts) >> makes them, named
C<a>, C<b>... (C<< $h->node >>, C<%%NODE%%> in a template);
C<< NgxHarness->start_nodes(\@nodes, $tpl, share => [qw/redis
upstream/], %start_opts) >> names the first node's ports of C<share> in
the others, then starts each with the same template.

=head2 Memory checkers

C<TEST_NGINX_PRELOAD=/path/libasan.so> runs nginx (and C<nginx -t>) with
that library preloaded, for a module built with sanitizers
(C<./build.sh asan>): C<ASAN_OPTIONS> and C<UBSAN_OPTIONS> send reports
to C<TESTDIR/preload/>, with LeakSanitizer on and whole stacks; options
of your own in those variables are added after (and win). C<done> fails
on every report there but leaks whose stack has no frame of the module,
hiredis or cJSON: nginx leaves its connection arrays at worker exit and
the first cycle's pool after C<nginx -t>, module or not.

C<TEST_NGINX_VALGRIND=1> (or a path to valgrind) runs nginx under
valgrind memcheck (C<./build.sh valgrind>), definite leaks shown, logs in
C<TESTDIR/valgrind/>, suppressions from C<t/valgrind.supp> if there is
one and more options from C<TEST_NGINX_VALGRIND_OPTS>; C<done> adds a
test, failing on any error and on leaks as above. Waits for nginx are
ten times longer (C<< $h->slowness >> says by how much, for a test's own
time limits: 10, 2 with C<TEST_NGINX_PRELOAD>, else 1), with two seconds
more after a start or reload for the workers to reach Redis; workers are
the master's children whatever their title.

At exit, whatever happened, the process that made C<$h> stops
everything; on a failure it prints the last 60 lines of the error log.
C<TEST_NGINX_CATLOG=1> prints the whole log, C<TEST_NGINX_LEAVE=1> keeps
the test directory, C<TEST_NGINX_VERBOSE=1> prints each generated
C<nginx.conf>.

Skips (missing redis-server, say) can only happen before the first test:
make the harness and its daemons first. Processes forked by the harness
get SIGTERM when the test process dies, even by SIGKILL (Linux).

=head2 Helpers

C<< $h->wait_for(sub { ... }, timeout => 30, interval => 0.02) >>: calls
the code until it returns true (that value) or the timeout, times
C<slowness>, has passed (0): a wait on a condition, never a fixed sleep.

C<< $h->binary >> (the nginx it runs), C<< $h->module >> (the module's
path), C<< $h->run_nginx(@args) >> (that nginx with these arguments, under
the memory checker's environment: output and exit code).

C<< NgxHarness::max_concurrency(\@requests, sub { key }) >> (also as a
method): the most requests of one key that were in the upstream at once
(C<arrived> .. C<finished>); in list context also C<< { key => max } >>.

C<< $h->fixture($file) >> (raw bytes), C<< $h->fixtures_expected >>
(decoded C<expected.json>), C<< $h->fixture_dir >>: from
C<WEBHOOK_FIXTURES> or C<REPO/t/fixtures/chatwoot>.

=cut

use strict;
use warnings;

use Config;
use Cwd qw(abs_path);
use Fcntl qw(:flock);
use File::Basename qw(dirname);
use File::Path qw(make_path);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Handle;
use IO::Select;
use IO::Socket::INET;
use JSON::PP ();
use MIME::Base64 qw(encode_base64 decode_base64);
use POSIX qw(WNOHANG);
use Scalar::Util qw(blessed refaddr);
use Test::More ();
use Time::HiRes qw(time sleep);

use NgxHarness::HTTP;
use NgxHarness::MockRedis;
use NgxHarness::Redis;
use NgxHarness::Upstream;

our $REPO = abs_path(dirname(File::Spec->rel2abs(__FILE__)) . '/../..');

# http modules nginx builds unless told --without-http_NAME_module

my %BUILTIN = map { $_ => 1 } qw(
    access auth_basic autoindex browser charset empty_gif fastcgi geo grpc
    gzip headers index limit_conn limit_req log map memcached mirror proxy
    referer rewrite scgi split_clients ssi upstream_hash upstream_ip_hash
    upstream_keepalive upstream_least_conn upstream_random upstream_zone
    userid uwsgi
);

my %REGISTRY;
my %USED_PORTS;
my %REDIS;                      # port => real Redis, for start's readiness
my $DONE_TESTING;
my $PLAN_AT_END;                # the pid whose harnesses are not all done

sub new {
    my ($class, %opts) = @_;

    my $self = bless {
        owner   => $$,
        binary  => $ENV{TEST_NGINX_BINARY} || '/usr/sbin/nginx',
        ports   => {},
        daemons => {},
        async   => {},
        seq     => 0,
    }, $class;

    $self->_skip("no nginx binary at $self->{binary}")
        unless -x $self->{binary};

    ($self->{version}) = _capture($self->{binary}, '-V');

    my $module = $opts{module} // 1;

    if ($module) {
        my $so = $module ne '1' ? $module
                 : $ENV{TEST_NGINX_MODULE}
                   || "$REPO/build/ngx_http_webhook_lock_module.so";

        $self->_skip("no module at $so (build it or set TEST_NGINX_MODULE)")
            unless -f $so;

        $self->{module} = abs_path($so);
    }

    $self->_check_needs(@{ $opts{needs} || [] });

    $self->{dir} = tempdir('ngx-webhook-XXXXXXXX', TMPDIR => 1,
                           CLEANUP => !$ENV{TEST_NGINX_LEAVE});

    # workers run as nobody when the tests run as root

    chmod 0755, $self->{dir};

    # sanitizer and valgrind runs (see "Memory checkers")

    $self->{preload} = $ENV{TEST_NGINX_PRELOAD};
    $self->{valgrind} = $ENV{TEST_NGINX_VALGRIND};

    for my $sub (grep { $self->{$_} } qw(preload valgrind)) {
        my $d = "$self->{dir}/$sub";
        mkdir $d;
        chmod 0777, $d;         # reports are written by workers too
    }

    # a strong reference: a die unwinds file lexicals before END runs

    $REGISTRY{refaddr $self} = $self;

    for my $sig (qw(INT TERM HUP)) {
        $SIG{$sig} = sub { exit 1 }
            if !defined $SIG{$sig} || $SIG{$sig} eq 'DEFAULT';
    }

    return $self;
}

sub testdir { $_[0]{dir} }

# several nginx nodes sharing the first one's daemons

sub nodes {
    my ($class, $n, %opts) = @_;

    my @nodes = map { $class->new(%opts) } 1 .. $n;
    my $name = 'a';

    $_->{node} = $name++ for @nodes;

    return @nodes;
}

sub node { $_[0]{node} // '' }

sub start_nodes {
    my ($class, $nodes, $tpl, %opts) = @_;

    my ($first, @rest) = @$nodes;

    for my $h (@rest) {
        $h->port($_, $first->port($_)) for @{ $opts{share} || [] };
    }

    delete $opts{share};

    $_->start($tpl, %opts) for @$nodes;

    return @$nodes;
}

sub port {
    my ($self, $name, $number) = @_;

    $name = lc($name // 'nginx');
    $self->{ports}{$name} = $number if defined $number;

    return $self->{ports}{$name} //= _free_port();
}

sub _set_port {
    my ($self, $name, $port) = @_;
    $self->{ports}{lc $name} = $port;
}

sub url {
    my ($self, $path) = @_;
    return 'http://127.0.0.1:' . $self->port('nginx') . ($path // '/');
}

sub write_file {
    my ($self, $name, $content) = @_;

    my $path = "$self->{dir}/$name";
    make_path(dirname($path));

    open my $fh, '>:raw', $path or die "$path: $!\n";
    print $fh $content;
    close $fh or die "$path: $!\n";

    return $path;
}

sub read_file {
    my ($self, $name) = @_;

    return _slurp("$self->{dir}/$name") // '';
}

###############################################################################

# configuration

sub _expand {
    my ($self, $text) = @_;

    $text //= '';
    $text =~ s/%%PORT_([A-Za-z0-9_]+)%%/$self->port(lc $1)/ge;
    $text =~ s/%%TESTDIR%%/$self->{dir}/g;
    $text =~ s/%%NODE%%/$self->node/ge;

    return $text;
}

sub _conf {
    my ($self, $tpl, %opts) = @_;

    my $d = $self->{dir};
    my $v = $self->{version};
    my $main = $self->_expand($opts{main});
    my $events = $self->_expand($opts{events}
                                // 'worker_connections 1024;');
    my $level = $v =~ /--with-debug\b/ ? 'debug' : 'info';
    my $errlog = $opts{error_log} // "$d/error.log";

    my $conf = "# generated by NgxHarness\n\n";

    $conf .= "load_module $self->{module};\n\n" if $self->{module};

    $conf .= "pid $d/nginx.pid;\n"
             . "error_log $errlog $level;\n"
             . "daemon off;\n";

    $conf .= "master_process on;\n" unless $main =~ /^\s*master_process\b/m;
    $conf .= "worker_processes 1;\n"
        unless $main =~ /^\s*worker_processes\b/m;

    $conf .= "\n$main\n" if length $main;

    $conf .= "\nevents {\n$events\n}\n\nhttp {\n"
             . "    access_log $d/access.log;\n\n";

    for my $t (qw(client_body proxy fastcgi uwsgi scgi)) {
        next if $v =~ /--without-http_${t}_module\b/;
        $conf .= "    ${t}_temp_path $d/${t}_temp;\n";
    }

    $conf .= "\n" . $self->_expand($tpl) . "\n";

    # start's readiness check asks the module itself (see "Readiness")

    $conf .= "\n    server {\n"
             . "        listen 127.0.0.1:" . $self->port('harness_status')
             . ";\n"
             . "        access_log off;\n"
             . "        location / { webhook_status; }\n"
             . "    }\n" if $opts{probe};

    return $conf . "}\n";
}

sub config_test {
    my ($self, $tpl, %opts) = @_;

    my $n = ++$self->{seq};
    my $d = $self->{dir};
    my $log = "$d/conf-test-$n.log";
    my $conf = $self->write_file("conf-test-$n.conf",
                                 $self->_conf($tpl, %opts,
                                              error_log => $log));

    my ($out, $rc) = _capture_env({ $self->_nginx_env },
                                  $self->_nginx_command('-t', '-p', "$d/",
                                                        '-c', $conf,
                                                        '-e', $log));

    return ($rc, $out);
}

sub config_ok {
    my ($self, $tpl, $name, %opts) = @_;

    my ($rc, $out) = $self->config_test($tpl, %opts);

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    Test::More::ok($rc == 0, $name // 'config ok')
        or Test::More::diag("nginx -t exited with $rc:\n$out");

    return $out;
}

sub config_fails {
    my ($self, $tpl, $re, $name, %opts) = @_;

    my ($rc, $out) = $self->config_test($tpl, %opts);

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    Test::More::ok($rc != 0 && $out =~ $re, $name // "config fails: $re")
        or Test::More::diag("nginx -t exited with $rc, expected failure"
                            . " matching $re:\n$out");

    return $out;
}

###############################################################################

# nginx lifecycle

sub start {
    my ($self, $tpl, %opts) = @_;

    die "nginx is already running\n" if $self->{master};

    my $d = $self->{dir};

    $self->{conf} = { tpl => $tpl, main => $opts{main},
                      events => $opts{events} };

    my $probe = $self->_probe($tpl, $opts{ready});
    my $conf = $self->_conf($tpl, %opts, probe => $probe);

    $self->write_file('nginx.conf', $conf);
    unlink "$d/nginx.pid";

    Test::More::diag("nginx.conf:\n$conf") if $ENV{TEST_NGINX_VERBOSE};

    my $pid = $self->_fork;

    if ($pid == 0) {
        open STDIN, '<', '/dev/null';
        open STDOUT, '>>', "$d/stderr.log";
        open STDERR, '>&', \*STDOUT;
        my %env = $self->_nginx_env;
        @ENV{keys %env} = values %env;
        my @cmd = $self->_nginx_command('-p', "$d/", '-c', "$d/nginx.conf",
                                        '-e', "$d/error.log");
        no warnings 'exec';
        exec { $cmd[0] } @cmd;
        POSIX::_exit(127);
    }

    $self->{master} = $pid;
    $self->{started} = 1;

    my $port = ($tpl // '') =~ /%%PORT_NGINX%%/i ? $self->port('nginx')
                                                 : undef;

    my ($workers) = ($opts{main} // '') =~ /^\s*worker_processes\s+(\d+)/m;
    $workers = 0 if ($opts{main} // '') =~ /^\s*master_process\s+off/m;

    my $deadline = time + ($opts{timeout} // 5) * $self->slowness;
    my $pid_ok = 0;

    local $?;

    while (time < $deadline) {
        my $r = waitpid($pid, WNOHANG);

        if ($r == $pid || $r == -1) {
            delete $self->{master};
            die $self->_failure("nginx exited with status " . ($? >> 8));
        }

        $pid_ok ||= (_slurp("$d/nginx.pid") // '') =~ /^$pid\b/;

        if ($pid_ok
            && $self->worker_pids >= ($workers // 1)
            && (!defined $port || _can_connect($port)))
        {
            if ($probe) {
                $self->_wait_ready($workers // 1);

            } elsif ($self->{valgrind}) {
                # under valgrind, workers take their time to reach Redis
                sleep 2;
            }

            return $self;
        }

        sleep 0.02;
    }

    $self->stop(timeout => 1);

    die $self->_failure('nginx did not start in time'
                        . (defined $port ? " (port $port)" : ''));
}

sub _failure {
    my ($self, $msg) = @_;

    return "$msg\n"
           . "--- error.log (end) ---\n" . $self->_tail('error.log', 30)
           . "--- stderr.log (end) ---\n" . $self->_tail('stderr.log', 30);
}

sub master_pid { $_[0]{master} }

sub stop {
    my ($self, %opts) = @_;

    my $pid = delete $self->{master} or return 1;
    my @workers = _children($pid);

    local $?;

    kill 'QUIT', $pid;
    my $graceful = _reap($pid, ($opts{timeout} // 5) * $self->slowness);

    if (!$graceful) {
        kill 'TERM', $pid;

        if (!_reap($pid, 3)) {
            kill 'KILL', $pid;
            _reap($pid, 3);
        }
    }

    # workers outlive a master that was killed

    for my $w (@workers) {
        kill 'KILL', $w if _cmdline($w) =~ /^nginx: /
                           || $self->{valgrind} && -e "/proc/$w";
    }

    return $graceful;
}

sub reload {
    my ($self, @args) = @_;

    my $tpl = @args % 2 ? shift @args : undef;
    my %opts = @args;

    my $master = $self->{master} or die "nginx is not running\n";

    if (defined $tpl) {
        my $c = $self->{conf};

        $c->{tpl} = $tpl;
        $c->{$_} = $opts{$_} for grep { exists $opts{$_} } qw(main events);
    }

    my $c = $self->{conf};
    my $probe = $self->_probe($c->{tpl}, $opts{ready});

    $self->write_file('nginx.conf', $self->_conf($c->{tpl}, %$c,
                                                 probe => $probe));

    my %old = map { $_ => 1 } $self->worker_pids;
    my $mark = $self->log_mark;

    kill 'HUP', $master;

    my $deadline = time + ($opts{timeout} // 5) * $self->slowness;
    my $wait_old = $opts{wait_old} // 1;

    while (time < $deadline) {
        my @now = $self->worker_pids;
        my $new = grep { !$old{$_} } @now;
        my $old = grep { $old{$_} } @now;

        if ($new && (!$old || !$wait_old)) {
            my ($workers) = ($c->{main} // '')
                            =~ /^\s*worker_processes\s+(\d+)/m;

            # the old workers' connections count until they are gone
            if ($probe) {
                $self->_wait_ready($workers // 1, \%old);

            } elsif ($self->{valgrind}) {
                sleep 2;
            }

            return 1;
        }
        return 0 if $self->error_log($mark) =~ /\[emerg\]/;

        sleep 0.05;
    }

    return 0;
}

# Readiness: when the configuration gives webhook_redis the address of a
# redis-server of the harness that runs, start and reload add a server of
# their own with webhook_status and return once every worker is connected
# to Redis (webhook_lock_redis_connected_workers), so that no first
# request meets a worker still connecting.

sub _probe {
    my ($self, $tpl, $ready) = @_;

    return 0 if !$self->{module} || defined $ready && !$ready;

    my $conf = $self->_expand($tpl);

    # workers connect to Redis when some location locks

    return 0 unless $conf =~ /^\s*webhook_lock\s+(?!off\b)\w/m;

    my @redis = $conf =~ /^\s*webhook_redis\s+([^;]*);/mg;

    for my $r (values %REDIS) {
        next unless $r->{pid} || $r->{external};

        my $port = $r->port;
        my $sock = $r->socket_path;

        return 1 if grep { /:\Q$port\E\b/
                           || defined $sock && /\Q$sock\E/ } @redis;
    }

    return 0;
}

sub _wait_ready {
    my ($self, $workers, $old) = @_;

    my $deadline = time + 30 * $self->slowness;
    my ($n, $want);

    while (time < $deadline) {

        # old workers still shutting down still count their connections

        $want = $workers;
        $want += grep { $old->{$_} } $self->worker_pids if $old;

        $n = eval { $self->status->{webhook_lock_redis_connected_workers} };
        return 1 if ($n // 0) >= $want;
        sleep 0.02;
    }

    die $self->_failure("nginx workers did not connect to Redis in time ("
                        . ($n // 'no answer') . " of $want)");
}

sub status {
    my ($self) = @_;

    my $res = $self->request(GET => '/?format=json', timeout => 5,
                             port => 'harness_status');

    die "webhook_status: " . ($res->{error} // "status $res->{status}")
        . "\n" unless ($res->{status} // 0) == 200;

    return JSON::PP::decode_json($res->{body});
}

sub wait_for {
    my ($self, $code, %opts) = @_;

    my $deadline = time + ($opts{timeout} // 30) * $self->slowness;

    while (1) {
        my $ok = $code->();
        return $ok if $ok;
        return 0 if time >= $deadline;
        sleep $opts{interval} // 0.02;
    }
}

sub binary { $_[0]{binary} }

sub module { $_[0]{module} }

sub run_nginx {
    my ($self, @args) = @_;

    return _capture_env({ $self->_nginx_env },
                        $self->_nginx_command(@args));
}

sub worker_pids {
    my ($self) = @_;

    my $master = $self->{master} or return ();
    my @pids = _children($master);

    # under valgrind the title nginx sets is not what /proc shows

    return @pids if $self->{valgrind};

    return grep { _cmdline($_) =~ /worker process/ } @pids;
}

###############################################################################

# daemons

sub redis {
    my ($self, %opts) = @_;

    my $class = delete $opts{class} // 'NgxHarness::Redis';
    my $redis = $class->new($self, %opts);
    $REDIS{ $redis->port } = $redis;

    return $redis;
}

sub mock_redis {
    my ($self, @args) = @_;
    return NgxHarness::MockRedis->new($self, @args);
}

sub upstream {
    my ($self, %opts) = @_;
    return NgxHarness::Upstream->new($self, %opts);
}

sub run_daemon {
    my ($self, $code, @args) = @_;

    my $pid = $self->_fork;

    if ($pid == 0) {
        setpgrp(0, 0);

        my $ok = eval { $code->(@args); 1 };
        print STDERR "daemon $$: $@" unless $ok;

        POSIX::_exit($ok ? 0 : 1);
    }

    $self->{daemons}{$pid} = 1;

    return $pid;
}

sub stop_daemon {
    my ($self, $pid, %opts) = @_;

    return 1 unless delete $self->{daemons}{$pid};

    local $?;

    my $sig = $opts{signal} // 'TERM';
    my $ok = 1;

    kill "-$sig", $pid;

    if (!_reap($pid, $opts{timeout} // 3)) {
        kill '-KILL', $pid;
        _reap($pid, 3);
        $ok = 0;
    }

    # whatever is left of the process group (per-connection children)

    kill '-KILL', $pid;

    return $ok;
}

sub _daemon_alive {
    my ($self, $pid) = @_;

    return 0 unless $self->{daemons}{$pid};

    local $?;

    my $r = waitpid($pid, WNOHANG);
    return 1 if $r == 0;

    delete $self->{daemons}{$pid};
    return 0;
}

sub _listen {
    my ($port) = @_;

    return IO::Socket::INET->new(
        LocalAddr => '127.0.0.1',
        LocalPort => $port,
        Proto     => 'tcp',
        Listen    => 1024,
        ReuseAddr => 1,
    ) || die "listen 127.0.0.1:$port: $!\n";
}

###############################################################################

# client

sub request {
    my ($self, $method, $uri, %opts) = @_;

    my $timeout = $opts{timeout} // 10;
    my $deadline = time + $timeout;
    my $port = $opts{port} // 'nginx';
    $port = $self->port($port) unless $port =~ /^\d+\z/;

    local $SIG{PIPE} = 'IGNORE';

    my %res = (status => undef, headers => {}, header_lines => [],
               body => '', raw => '');

    my $sock = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => $timeout,
    );

    if (!$sock) {
        $res{error} = "connect: $!";
        return \%res;
    }

    my @pieces = ref $opts{raw} ? @{ $opts{raw} }
               : defined $opts{raw} ? ($opts{raw})
               : _build_request($method, $uri, %opts);
    my $head = shift @pieces;

    my $sent = _send($sock, $head, $deadline);

    for my $piece (@pieces) {
        last unless $sent;
        sleep $opts{slow} if $opts{slow};
        $sent = _send($sock, $piece, $deadline);
    }

    if (defined $opts{abort_after}) {
        sleep $opts{abort_after};
        close $sock;
        return undef;
    }

    if (defined $opts{abort_on}) {
        sleep 0.01 until -e $opts{abort_on} || time >= $deadline;
        close $sock;
        return undef;
    }

    my $rd = NgxHarness::HTTP->new($sock, raw => 1);
    $rd->deadline($deadline);

    my ($h, $err);

    while (1) {
        ($h, $err) = $rd->head;
        last unless defined $h;

        my ($line, $pairs, $hdr) = NgxHarness::HTTP::parse_head($h);

        @res{qw(version status reason)} =
            $line =~ m{^(HTTP/\d\.\d)\s+(\d{3})\s*(.*)\z};

        @res{qw(headers header_lines)} = ($hdr, $pairs);

        last unless defined $res{status}
                    && $res{status} =~ /^1/ && $res{status} != 101;
    }

    if (defined $h) {
        my $s = $res{status} // 0;

        if (($method // '') ne 'HEAD' && $s != 204 && $s != 304) {
            ($res{body}, $err) = $rd->body($res{headers}, 1);
        }

    } else {
        $res{status} = undef;
    }

    $res{error} = $err if $err;
    $res{raw} = $rd->raw;

    close $sock;

    return \%res;
}

sub _build_request {
    my ($method, $uri, %opts) = @_;

    my $hdrs = $opts{headers} // [];
    my @hdr;

    if (ref $hdrs eq 'HASH') {
        @hdr = map { [ $_, $hdrs->{$_} ] } sort keys %$hdrs;

    } else {
        my @list = @$hdrs;
        push @hdr, [ splice @list, 0, 2 ] while @list;
    }

    my %has = map { lc $_->[0] => 1 } @hdr;
    my $body = $opts{body};
    my @lines;

    push @lines, 'Host: localhost' unless $has{host};
    push @lines, 'Connection: close' unless $has{connection};

    if (defined $body) {
        push @lines, 'Content-Type: application/json'
            unless $has{'content-type'};

        if ($opts{chunked}) {
            push @lines, 'Transfer-Encoding: chunked'
                unless $has{'transfer-encoding'};

        } else {
            push @lines, 'Content-Length: ' . length $body
                unless $has{'content-length'};
        }
    }

    for my $pair (@hdr) {
        my ($name, $value) = @$pair;
        next unless defined $value;
        push @lines, map { "$name: $_" } ref $value ? @$value : $value;
    }

    my $head = "$method $uri " . ($opts{version} // 'HTTP/1.1') . "\r\n"
               . join('', map { "$_\r\n" } @lines) . "\r\n";

    return ($head) unless defined $body;

    my $size = $opts{chunk_size} || 1024;
    my @parts;

    if ($opts{chunked} || $opts{slow}) {
        for (my $i = 0; $i < length $body; $i += $size) {
            push @parts, substr($body, $i, $size);
        }

    } else {
        @parts = ($body);
    }

    if ($opts{chunked}) {
        @parts = map { sprintf("%x\r\n", length) . "$_\r\n" } @parts;
        push @parts, "0\r\n\r\n";
    }

    return ($head, @parts);
}

sub _send {
    my ($sock, $data, $deadline) = @_;

    my $sel = IO::Select->new($sock);

    while (length $data) {
        my $left = $deadline - time;
        return 0 if $left <= 0;
        next unless $sel->can_write($left);

        my $n = syswrite($sock, $data, 65536);

        if (!defined $n) {
            next if $!{EINTR} || $!{EAGAIN};
            return 0;
        }

        substr($data, 0, $n, '');
    }

    return 1;
}

sub request_async {
    my ($self, $method, $uri, %opts) = @_;

    my $file = "$self->{dir}/async-" . ++$self->{seq} . '.json';
    my $pid = $self->_fork;

    if ($pid == 0) {
        my $at = delete $opts{at};
        sleep($at - time) if defined $at && $at > time;

        my $res = eval { $self->request($method, $uri, %opts) };
        $res = { status => undef, error => "died: $@" } if $@;

        if ($res) {
            $res->{$_} = encode_base64($res->{$_} // '', '')
                for qw(body raw);
        }

        open my $fh, '>', "$file.tmp" or POSIX::_exit(1);
        print $fh JSON::PP->new->allow_nonref->encode($res);
        close $fh;

        rename "$file.tmp", $file;
        POSIX::_exit(0);
    }

    $self->{async}{$pid} = 1;

    return { pid => $pid, file => $file,
             deadline => time + ($opts{timeout} // 10)
                         + ($opts{abort_after} // 0) + 10 };
}

sub done_async {
    my ($self, $hd) = @_;
    return -e $hd->{file};
}

sub wait_all {
    my ($self, @handles) = @_;

    my @res;

    for my $hd (@handles) {
        local $?;

        if (!_reap($hd->{pid}, $hd->{deadline} - time)) {
            kill 'KILL', $hd->{pid};
            _reap($hd->{pid}, 2);
        }

        delete $self->{async}{$hd->{pid}};

        my $json = _slurp($hd->{file});
        my $res = defined $json
                  ? JSON::PP->new->allow_nonref->decode($json)
                  : { status => undef, error => 'no result', headers => {},
                      body => '', raw => '' };

        if ($res && defined $json) {
            $res->{$_} = decode_base64($res->{$_}) for qw(body raw);
        }

        push @res, $res;
    }

    return wantarray ? @res : \@res;
}

###############################################################################

# logs

sub error_log {
    my ($self, $since) = @_;
    return _slurp("$self->{dir}/error.log", $since) // '';
}

sub access_log {
    my ($self, $since) = @_;
    return _slurp("$self->{dir}/access.log", $since) // '';
}

sub log_mark {
    my ($self) = @_;
    return -s "$self->{dir}/error.log" || 0;
}

sub error_log_like {
    my ($self, $re, $name, %opts) = @_;

    my $deadline = time + ($opts{timeout} // 2);
    my $log;

    while (1) {
        $log = $self->error_log($opts{since});
        last if $log =~ $re || time >= $deadline;
        sleep 0.05;
    }

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $ok = Test::More::ok($log =~ $re, $name // "error log: $re");

    Test::More::diag("no match for $re; error log ends with:\n"
                     . _last_lines($log, 20)) unless $ok;

    return $ok;
}

sub no_error_log {
    my ($self, $re, $name, %opts) = @_;

    my @lines = grep { $_ =~ $re } split /\n/, $self->error_log($opts{since});

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    my $ok = Test::More::ok(!@lines, $name // "no $re in error log");

    Test::More::diag("unexpected lines:\n"
                     . join("\n", grep { defined } @lines[0 .. 9]))
        unless $ok;

    return $ok;
}

sub _tail {
    my ($self, $file, $n) = @_;
    return _last_lines(_slurp("$self->{dir}/$file") // '', $n);
}

sub _last_lines {
    my ($text, $n) = @_;

    my @lines = split /\n/, $text;
    splice @lines, 0, @lines - $n if @lines > $n;

    return join('', map { "$_\n" } @lines);
}

###############################################################################

# the end

sub done {
    my ($self, %opts) = @_;

    $self->_shutdown;

    if ($self->{started}) {
        my @log = split /\n/, $self->error_log;

        my @alerts = grep { /\[(?:alert|crit|emerg)\]/ } @log;
        @alerts = grep { $_ !~ $opts{allow} } @alerts if $opts{allow};

        Test::More::ok(!@alerts, 'no alerts in error log')
            or Test::More::diag(join "\n", grep { defined } @alerts[0 .. 9]);

        my $san = qr/AddressSanitizer|LeakSanitizer|ThreadSanitizer
                    |MemorySanitizer|UndefinedBehaviorSanitizer
                    |runtime\ error:/x;

        my @reports = grep { $_ =~ $san }
                      @log, split /\n/, _slurp("$self->{dir}/stderr.log")
                                        // '';

        # reports sent to files by TEST_NGINX_PRELOAD's log_path

        my ($bad, $ignored) = $self->_memory_reports('preload');

        Test::More::ok(!@reports && !@$bad, 'no sanitizer errors')
            or Test::More::diag(join "\n",
                                (grep { defined } @reports[0 .. 19]),
                                @$bad);

        if ($self->{valgrind}) {
            my ($vbad, $vignored) = $self->_memory_reports('valgrind');

            Test::More::ok(!@$vbad, 'no valgrind errors')
                or Test::More::diag(join "\n", @$vbad);

            $ignored += $vignored;
        }

        Test::More::note("$ignored leak reports of nginx's own ignored")
            if $ignored;
    }

    $self->{done} = 1;

    # several harnesses in one file: the plan comes with the last done,
    # or at the end when some harness never had its done

    if (grep { $_->{owner} == $$ && !$_->{done} } values %REGISTRY) {
        $PLAN_AT_END = $$;
        return;
    }

    Test::More::done_testing() unless $DONE_TESTING++;
}

# Sanitizer (ASan, LSan, UBSan) or valgrind reports, as text to show, and
# how many leaks were left out.  Every report fails a file but a leak whose
# stack has no frame of the module or of the libraries it drives (hiredis,
# cJSON): nginx frees neither its connections at worker exit nor the first
# cycle's pool after "nginx -t", with or without the module.

sub _memory_reports {
    my ($self, $sub) = @_;

    return ([], 0) unless $self->{$sub};

    my $ours = qr/ngx_http_webhook_lock|libhiredis|libcjson/;
    $ours = qr/$ours|\Q$self->{module}\E/ if $self->{module};

    my $leak = qr/^(?:==\d+==\s+)?(?:(?:Direct|Indirect)\ leak\ of
                  |[\d,]+\ (?:\([^)]*\)\ )?bytes\ in\ [\d,]+\ blocks
                  \ are)/mx;

    my (@bad, $ignored);

    for my $file (sort glob "$self->{dir}/$sub/*") {
        my $text = _slurp($file) // next;
        my @kept;

        # paragraphs: a report's head, each leak with its stack, a summary

        for my $block (split /\n(?:==\d+==\s*)?\n/, $text) {
            if ($block =~ $leak && $block !~ $ours) {
                $ignored++;

            } elsif ($sub eq 'valgrind') {
                # errors and leaks have a stack; the rest is talk
                push @kept, $block if $block =~ /^==\d+==\s+at 0x/m;

            } elsif ($block =~ /\S/
                     && $block !~ /^(?:==\d+==)?ERROR: LeakSanitizer/m
                     && $block !~ /^SUMMARY: AddressSanitizer: [\d,]+ byte/m)
            {
                push @kept, $block;
            }
        }

        push @bad, "--- $file ---", @kept if @kept;
    }

    return (\@bad, $ignored // 0);
}

sub _shutdown {
    my ($self) = @_;

    local $?;

    $self->stop;
    $self->stop_daemon($_) for keys %{ $self->{daemons} };

    for my $pid (keys %{ $self->{async} }) {
        kill 'KILL', $pid;
        _reap($pid, 2);
    }

    $self->{async} = {};
}

sub _cleanup {
    my ($self, $failed) = @_;

    return if $self->{owner} != $$ || $self->{cleaned}++;

    $self->_shutdown;

    if ($self->{started} && $ENV{TEST_NGINX_CATLOG}) {
        Test::More::diag("--- error.log ---\n" . $self->error_log);
        Test::More::diag("--- stderr.log ---\n"
                         . (_slurp("$self->{dir}/stderr.log") // ''));

    } elsif ($self->{started} && $failed) {
        Test::More::diag("--- error.log (last 60 lines) ---\n"
                         . $self->_tail('error.log', 60));

        my $err = $self->_tail('stderr.log', 60);
        Test::More::diag("--- stderr.log (last 60 lines) ---\n$err")
            if length $err;
    }

    Test::More::diag("test directory kept: $self->{dir}")
        if $ENV{TEST_NGINX_LEAVE};
}

END {
    my $failed = $? || !Test::More->builder->is_passing;

    local $?;

    $_->_cleanup($failed) for values %REGISTRY;

    Test::More::done_testing()
        if ($PLAN_AT_END // 0) == $$ && !$DONE_TESTING++;
}

sub DESTROY {
    my ($self) = @_;

    return if $self->{owner} != $$ || $self->{cleaned};

    local ($?, $@, $!);

    $self->_cleanup(1);
}

###############################################################################

# fixtures

sub fixture_dir {
    my $dir = $ENV{WEBHOOK_FIXTURES} // "$REPO/t/fixtures/chatwoot";
    return abs_path($dir) // $dir;
}

sub fixture {
    my ($self, $name) = @_;

    my $path = fixture_dir() . "/$name";
    my $data = _slurp($path);

    die "fixture $path: $!\n" unless defined $data;

    return $data;
}

sub fixtures_expected {
    my ($self) = @_;
    return JSON::PP::decode_json($self->fixture('expected.json'));
}

###############################################################################

# helpers

sub max_concurrency {
    shift if @_ && !ref $_[0] && $_[0] eq __PACKAGE__
          || blessed $_[0] && $_[0]->isa(__PACKAGE__);

    my ($reqs, $key_fn) = @_;

    my %events;

    for my $r (@$reqs) {
        my $key = $key_fn ? $key_fn->($r) // '' : '';
        push @{ $events{$key} }, [ $r->{arrived}, 1 ],
                                 [ $r->{finished}, -1 ];
    }

    my $max = 0;
    my %by_key;

    for my $key (keys %events) {
        my ($cur, $top) = (0, 0);

        # an end before a start at the same time: touching is no overlap

        for my $e (sort { $a->[0] <=> $b->[0] || $a->[1] <=> $b->[1] }
                   @{ $events{$key} })
        {
            $cur += $e->[1];
            $top = $cur if $cur > $top;
        }

        $by_key{$key} = $top;
        $max = $top if $top > $max;
    }

    return wantarray ? ($max, \%by_key) : $max;
}

# what nginx runs with: TEST_NGINX_PRELOAD, TEST_NGINX_VALGRIND

sub _nginx_env {
    my ($self) = @_;

    my $preload = $self->{preload} or return ();
    my $d = "$self->{dir}/preload";

    # Reports go to files the workers can write; whole stacks (nginx has
    # no frame pointers) so that a leak shows whose it is; a leak found at
    # exit leaves the exit status alone ("nginx -t" says 0 all the same):
    # done() reads the reports.  The caller's own *SAN_OPTIONS come last
    # and win.

    return (
        LD_PRELOAD    => join(' ', $preload, $ENV{LD_PRELOAD} // ()),
        ASAN_OPTIONS  => join(':', "log_path=$d/asan", 'detect_leaks=1',
                              'fast_unwind_on_malloc=0',
                              'malloc_context_size=30',
                              $ENV{ASAN_OPTIONS} // ()),
        LSAN_OPTIONS  => join(':', 'exitcode=0', $ENV{LSAN_OPTIONS} // ()),
        UBSAN_OPTIONS => join(':', "log_path=$d/ubsan", 'print_stacktrace=1',
                              $ENV{UBSAN_OPTIONS} // ()),
    );
}

sub _nginx_command {
    my ($self, @args) = @_;

    return ($self->{binary}, @args) unless $self->{valgrind};

    my $supp = "$REPO/t/valgrind.supp";
    my $vg = $self->{valgrind} =~ m{/} ? $self->{valgrind} : 'valgrind';

    return ($vg, '--tool=memcheck', '--leak-check=full',
            '--show-leak-kinds=definite', '--errors-for-leak-kinds=definite',
            '--num-callers=40', "--log-file=$self->{dir}/valgrind/vg.%p",
            (-f $supp ? "--suppressions=$supp" : ()),
            split(' ', $ENV{TEST_NGINX_VALGRIND_OPTS} // ''),
            $self->{binary}, @args);
}

# how much longer nginx takes under a memory checker

sub slowness {
    my ($self) = @_;
    return $self->{valgrind} ? 10 : $self->{preload} ? 2 : 1;
}

sub _skip {
    my ($self, $reason) = @_;

    my $tb = Test::More->builder;

    Test::More::plan(skip_all => $reason)
        if !$tb->has_plan && $tb->current_test == 0;

    die "$reason\n";
}

sub _check_needs {
    my ($self, @needs) = @_;

    my $v = $self->{version};

    for my $need (@needs) {
        my $ok;

        if ($need eq 'redis') {
            $ok = $ENV{TEST_NGINX_REDIS_PORT} || $ENV{TEST_NGINX_REDIS_SERVER}
                  || _which('redis-server');

        } elsif ($need eq 'debug') {
            $ok = $v =~ /--with-debug\b/;

        } elsif ($need eq 'http') {
            $ok = $v !~ /--without-http(?:\s|\z)/;

        } elsif ($BUILTIN{$need}) {
            $ok = $v !~ /--without-http_${need}_module\b/;

        } else {
            $ok = $v =~ /--with-(?:http_)?\Q$need\E(?:_module)?(?:\s|\z)/;
        }

        $self->_skip("nginx lacks $need") unless $ok;
    }
}

sub _fork {
    my ($self) = @_;

    STDOUT->flush;
    STDERR->flush;

    my $pid = fork // die "fork: $!\n";
    return $pid if $pid;

    $SIG{$_} = 'DEFAULT' for qw(INT TERM HUP QUIT PIPE ALRM CHLD);

    _set_pdeathsig();

    return 0;
}

# the child gets SIGTERM when the test process dies (Linux prctl)

my %SYS_PRCTL = (x86_64 => 157, aarch64 => 167, i686 => 172, i386 => 172);

sub _set_pdeathsig {
    my ($arch) = $Config{archname} =~ /^(\w+)-linux/ or return;
    my $nr = $SYS_PRCTL{$arch} or return;

    eval { syscall($nr, 1, 15) };      # PR_SET_PDEATHSIG, SIGTERM
}

sub _free_port {
    for (1 .. 100) {
        my $s = IO::Socket::INET->new(
            LocalAddr => '127.0.0.1',
            LocalPort => 0,
            Proto     => 'tcp',
            Listen    => 1,
        ) or die "cannot bind 127.0.0.1:0: $!\n";

        my $port = $s->sockport;
        close $s;

        return $port unless $USED_PORTS{$port}++;
    }

    die "no free port\n";
}

sub _can_connect {
    my ($port) = @_;

    my $s = IO::Socket::INET->new(
        PeerAddr => '127.0.0.1',
        PeerPort => $port,
        Proto    => 'tcp',
        Timeout  => 1,
    ) or return 0;

    close $s;

    return 1;
}

sub _reap {
    my ($pid, $timeout) = @_;

    my $deadline = time + ($timeout // 0);

    while (1) {
        my $r = waitpid($pid, WNOHANG);
        return 1 if $r == $pid || $r == -1;
        return 0 if time >= $deadline;
        sleep 0.01;
    }
}

sub _children {
    my ($ppid) = @_;

    my @pids;

    if (opendir my $dh, '/proc') {
        for my $p (grep { /^\d+\z/ } readdir $dh) {
            my $stat = _slurp("/proc/$p/stat") // next;
            my ($state, $parent) = $stat =~ /^.*\) (\S) (\d+)/s or next;
            push @pids, $p if $parent == $ppid && $state ne 'Z';
        }

        closedir $dh;

    } else {
        my ($out) = _capture('ps', '-o', 'pid=', '--ppid', $ppid);
        @pids = $out =~ /(\d+)/g;
    }

    return sort { $a <=> $b } @pids;
}

sub _cmdline {
    my ($pid) = @_;

    my $cmd = _slurp("/proc/$pid/cmdline") // '';
    $cmd =~ tr/\0/ /;

    return $cmd;
}

sub _which {
    my ($prog) = @_;

    for my $dir (split /:/, $ENV{PATH} // '') {
        return "$dir/$prog" if length $dir && -x "$dir/$prog";
    }

    return undef;
}

sub _slurp {
    my ($file, $offset) = @_;

    open my $fh, '<:raw', $file or return undef;
    seek $fh, $offset, 0 if $offset;

    local $/;
    my $data = <$fh>;
    close $fh;

    return $data // '';
}

sub _capture {
    my (@cmd) = @_;
    return _capture_env({}, @cmd);
}

sub _capture_env {
    my ($env, @cmd) = @_;

    my $pid = open(my $fh, '-|') // die "fork: $!\n";

    if ($pid == 0) {
        @ENV{keys %$env} = values %$env;
        open STDERR, '>&', \*STDOUT;
        no warnings 'exec';
        exec { $cmd[0] } @cmd;
        print "exec $cmd[0]: $!\n";
        POSIX::_exit(127);
    }

    my $out = do { local $/; <$fh> } // '';
    close $fh;

    my $rc = $? & 127 ? 128 + ($? & 127) : $? >> 8;

    return ($out, $rc);
}

1;
