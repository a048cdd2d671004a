#!/usr/bin/perl

# Redis Sentinel: the master found through the sentinels (the first one
# down: the next one asked), followed across a failover in the middle of
# an album burst without a reload, left when it turns replica (READONLY),
# the sentinels' password, and all of them down and back.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Chatwoot;
use Provider;
use RedisSentinel;
use NgxHarness::DNS;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);

plan skip_all => 'needs redis-servers of its own'
    if $ENV{TEST_NGINX_REDIS_PORT};

# a second replica: the sentinel that fails over reconfigures it before
# +switch-master, which leaves a second or so after the promotion

my $rs = RedisSentinel->new($h, sentinels => 3, replicas => 2);

# another nginx, that does not listen to the sentinel running the failover
my $h2 = NgxHarness->new(needs => [qw/proxy redis/]);
my $up = $h->upstream;
my $app = Chatwoot->start(port => $h->port('app'), dir => $h->testdir,
                          window => 0.15);

$rs->wait_settled;

my $primary = $rs->primary;
my $replica = $rs->replica;

sub conf {
    my ($redis, $extra, $http) = @_;

    $extra //= '';
    $http //= '';

    return <<"CONF";
$http
webhook_redis $redis connect_timeout=300ms timeout=500ms;

log_format sentinel '\$msec \$pid \$status \$webhook_lock_status \$webhook_sender';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    access_log %%TESTDIR%%/sentinel.log sentinel;

    location /hook {
        webhook_lock        json;
        webhook_sender      from;
        webhook_inbox       inbox;
        webhook_retry_after 1;
        webhook_redis_fail  closed;

        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wait {
        webhook_lock        json;
        webhook_sender      from;
        webhook_inbox       inbox;
        webhook_lock_wait   10s;
        webhook_redis_fail  closed;

        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /webhooks/whatsapp/ {
        webhook_lock        whatsapp;
        webhook_lock_ttl    3s;
        webhook_retry_after 1;
        webhook_redis_fail  closed;
        $extra

        proxy_pass http://127.0.0.1:%%PORT_APP%%;
    }
}
CONF
}

sub lock_of {
    my ($from, %opts) = @_;

    my $uri = '/hook' . ($opts{hold} ? "?hold=$opts{hold}" : '');

    return $h->request_async(POST => $uri,
                             body => qq({"inbox":"i1","from":"$from"}));
}

sub post {
    my ($from) = @_;
    return ($h->wait_all(lock_of($from)))[0];
}

sub key { "webhook:{i1}:$_[0]" }

# a lock asked for, as MONITOR shows it: a script, or SET NX, on $inbox
sub lock_command {
    my ($seen, $inbox) = @_;

    my @cmd = @{ $seen->[1] };

    return 0 unless $cmd[0] =~ /^EVAL/i
                    || $cmd[0] =~ /^SET$/i && grep { /^NX$/i } @cmd;

    return scalar grep { index($_, $inbox) >= 0 } @cmd;
}

# a lock of $from held in the upstream, found on $redis: asked again
# while the worker is not there yet; the request's handle, or undef
sub lock_on {
    my ($redis, $from) = @_;

    my $held;

    $h->wait_for(sub {
        my $hd = lock_of($from, hold => $from);

        $h->wait_for(sub { $h->done_async($hd)
                           || $redis->cmd('EXISTS', key($from)) });

        if ($redis->cmd('EXISTS', key($from))) {
            $held = $hd;
            return 1;
        }

        $h->wait_all($hd);
        return 0;
    });

    return $held;
}

# lets the request of lock_on go: its status
sub unhold {
    my ($held, $from) = @_;

    $up->release($from);
    return $held ? ($h->wait_all($held))[0]{status} : 0;
}

# a request that is refused for Redis, not for a held lock
sub unavailable {
    my ($res) = @_;
    return ($res->{status} // 0) == 503
           && $res->{body} =~ /"lock_unavailable"/;
}

# a connection's reason to be down: its [error] line, or, when another
# reason came first in that outage, the debug line that follows
my $down = qr/(?:is unreachable|still down)/;

my $sentinels = $rs->addresses;

my ($rc) = $h->config_test(conf('redis://mymaster sentinels=' . $sentinels,
                                'webhook_dedup 1h;'));
my $dedup = $rc == 0 ? 'webhook_dedup 1h;' : '';

note($dedup ? 'webhook_dedup: exactly once asserted'
            : 'no webhook_dedup: at least once asserted');

###############################################################################

# 1. locks through Sentinel: on the master it names

$h->start(conf("redis://mymaster sentinels=$sentinels", $dedup),
          main => 'worker_processes 2;');

my $held = lock_of('alice', hold => 'alice');

ok($h->wait_for(sub { $primary->cmd('EXISTS', key('alice')) }),
   'the lock is on the primary');
is($replica->cmd('ROLE')->[0], 'slave', 'the replica is a replica');

my $busy = post('alice');
is($busy->{status}, 503, 'a held sender: 503');
like($busy->{body}, qr/"sender_busy"/, 'sender_busy');

$up->release('alice');
is(($h->wait_all($held))[0]{status}, 200, 'the held request forwarded');

$h->error_log_like(qr/\[notice\].*redis master mymaster is at 127\.0\.0\.1:${\ $primary->port }\b/,
                   'the master found is logged');

###############################################################################

# 2. the first sentinel not listening: the next one is asked

my $dead = $h->port('dead_sentinel');
my $mark = $h->log_mark;

ok($h->reload(conf("redis://mymaster sentinels=127.0.0.1:$dead,$sentinels",
                   $dedup)),
   'reloaded with a dead sentinel first');

$held = lock_of('bob', hold => 'bob');

ok($h->wait_for(sub { $primary->cmd('EXISTS', key('bob')) }),
   'first sentinel down: locked on the primary');
is(post('bob')->{status}, 503, 'first sentinel down: a held sender refused');

$up->release('bob');
is(($h->wait_all($held))[0]{status}, 200, 'first sentinel down: forwarded');

my $said = () = $h->error_log($mark)
               =~ /\[error\].*redis 127\.0\.0\.1:$dead sentinel is unreachable/g;

is($said, 2, 'the dead sentinel was asked, and each worker said so once');

###############################################################################

# 3. SENTINEL FAILOVER in the middle of an album burst: followed at once,
# without a reload; fail closed, never two requests of one sender in the
# app, every message once

$rs->record($_) for 0 .. 2;

$h2->port('upstream', $up->port);
$h2->port('app', $h->port('app'));
$h2->start(conf('redis://mymaster sentinels=127.0.0.1:'
                . $rs->sentinel(0)->port . ',127.0.0.1:'
                . $rs->sentinel(2)->port));
my $monitor = RedisSentinel::monitor($h, $replica);

# what nginx answered since $at (the access log's offset), as a count
sub answered {
    my ($at, $what) = @_;

    my $log = substr($h->read_file('sentinel.log'), $at);
    my $n = () = $log =~ / \Q$what\E /g;

    return $n;
}

# a request in the app across the failover: its lock taken on the old
# master and copied to the replica; its release, while no lock is taken,
# waits and goes to the new master

my $gina = lock_on($primary, 'gina');

ok($h->wait_for(sub { $replica->cmd('EXISTS', key('gina')) }),
   'a lock held across the failover, on the replica too');

my $at = length $h->read_file('sentinel.log');
my $t0 = time;
my $burst = Provider->album($h, '1555300', 20);

ok($h->wait_for(sub { answered($at, '503 busy') }),
   'the albums are held back');

my $failover = time;
$rs->failover(1);

# asked once the failover has begun and before the promotion, while the
# old master still takes writes that the new one will never see: refused

ok($h->wait_for(sub { $rs->events(1, '+try-failover') }),
   'a failover begins');

my $zed = lock_of('zed', hold => 'zed');

$h->wait_for(sub { $h->done_async($zed)
                   || $primary->cmd('EXISTS', key('zed')) });

my $on_old = $primary->cmd('EXISTS', key('zed'));
my $early = !$rs->events(1, '+promoted-slave');

$up->release('zed');
my $refused = ($h->wait_all($zed))[0];

is(unhold($gina, 'gina'), 200, 'the request held across it ends');
$early &&= !$rs->events(1, '+promoted-slave');

# Sentinel promotes about a second after it begins: a machine too busy
# to ask within that second has nothing to show here

SKIP: {
    skip 'the promotion came before the request was answered', 2
        unless $early;

    ok(!$on_old, 'no lock taken on the old master once the failover began');
    ok(unavailable($refused), 'a failover under way: 503 lock_unavailable');
}

# the second nginx does not listen to the sentinel that runs the
# failover: it follows on +switch-master, from the others

my $seen;

ok($h->wait_for(sub {
       $h2->request(POST => '/hook', body => '{"inbox":"i2","from":"pat"}',
                    timeout => 5);

       my ($s0) = $rs->switches(0) or return 0;

       ($seen) = grep { $_->[0] > $s0->[0] && lock_command($_, '{i2}') }
                 RedisSentinel::monitored($monitor);

       return $seen;
   }, interval => 0.02), 'without the leader: locks on the new master');

my ($s0) = $rs->switches(0);
my $took2 = $seen ? $seen->[0] - $s0->[0] : 999;

ok($took2 <= 3 * $h->slowness,
   'without the leader: within 3 s of +switch-master');

ok($h->wait_for(sub { $rs->switches(1) }), 'the sentinels switch');

# long before the ttl (30 s)

ok($h->wait_for(sub { !$replica->cmd('EXISTS', key('gina')) }, timeout => 3),
   'its release, kept meanwhile, done on the new master');

my $results = $burst->wait;
my %st = Provider::statuses($results);

note(sprintf 'failover: %d webhooks, %d attempts in %.1f s: %s',
     scalar @$results, scalar(map { @{ $_->{attempts} } } @$results),
     time - $t0, join(', ', map { "$_ x$st{$_}" } sort keys %st));

my ($switch) = $rs->switches(1);

is($switch->[1], 'mymaster 127.0.0.1 ' . $primary->port . ' 127.0.0.1 '
                 . $replica->port, '+switch-master to the replica');
is($rs->master(0), '127.0.0.1:' . $replica->port, 'the replica is master');

my $log = substr($h->read_file('sentinel.log'), $at);
my @after = grep { $_->[0] > $switch->[0] }
            map { [ split / / ] } split /\n/, $log;

ok(scalar(grep { $_->[2] == 200 } @after),
   'the burst went on after the switch');

is(scalar(grep { !$_->{ok} } @$results), 0,
   'every webhook delivered in the end (2xx)');
unlike($log, qr/ open /, 'none forwarded unlocked');

my @msgs = grep { $_->{sender} =~ /^1555300/ } @{ $app->messages };
my %ids;
$ids{ $_->{id} }++ for @msgs;

my $convs = $app->conversations;
my %conv = map { $_ => $convs->{$_} } grep { /^1555300/ } keys %$convs;

my ($overlap, $by) = NgxHarness::max_concurrency(
    [ map { { arrived => $_->{start}, finished => $_->{end},
              sender => $_->{sender} } } @msgs ],
    sub { $_[0]{sender} });

is(scalar(keys %ids), 120, 'every message processed');
is($overlap, 1, 'never two requests of one sender in the app at once')
    or diag explain { map { $_ => $by->{$_} } grep { $by->{$_} > 1 }
                      keys %$by };
is_deeply([ grep { $conv{$_} != 1 } sort keys %conv ], [],
          'exactly one conversation per contact')
    or diag explain \%conv;

my $twice = grep { $ids{$_} > 1 } keys %ids;

if ($dedup) {
    is($twice, 0, 'every message processed exactly once');

} else {
    note("$twice messages processed more than once (no dedup)");
}

# the first lock taken on the new master (after its promotion only nginx
# writes there), by the nginx that listens to the leader

my ($try) = $rs->events(1, '+try-failover');
my ($promoted) = $rs->events(1, '+promoted-slave');

my ($first) = grep { $_->[0] > $promoted->[0] && lock_command($_, '{i1}') }
              RedisSentinel::monitored($monitor);

ok($first, 'locks taken on the new master');

my $took = $first ? $first->[0] - $switch->[0] : 999;

diag(sprintf 'failover: +try-failover %.3f s after SENTINEL FAILOVER, '
     . '+promoted-slave %.3f s after, +switch-master (on the leader) '
     . '%.3f s after; the first lock on the new master %.3f s after '
     . '+promoted-slave (%.3f s after +switch-master), no lock for '
     . '%.3f s; without the leader: the first lock %.3f s after '
     . '+switch-master', $try->[0] - $failover,
     $promoted->[0] - $failover, $switch->[0] - $failover,
     $first ? $first->[0] - $promoted->[0] : -1, $took,
     $first ? $first->[0] - $try->[0] : -1, $took2);

ok($took <= 3 * $h->slowness, 'locks on the new master within 3 s');
ok($first && $first->[0] - $promoted->[0] <= 3 * $h->slowness,
   'on the new master within 3 s of its promotion');

$h->error_log_like(qr/\[notice\].*redis master mymaster is at 127\.0\.0\.1:${\ $replica->port }\b/,
                   'the new master is logged');

# the subscriber followed too: a waiting request is woken on the new
# master's release at once, not by its next question a second later

my $ivy_first = $h->request_async(POST => '/wait?hold=ivy',
                                  body => '{"inbox":"i1","from":"ivy"}');

ok($h->wait_for(sub { $replica->cmd('EXISTS', key('ivy')) }),
   'a lock on the new master');

my $second = $h->request_async(POST => '/wait',
                               body => '{"inbox":"i1","from":"ivy"}');

ok($h->wait_for(sub { $replica->cmd('EXISTS', key('ivy') . ':q') }),
   'a second one waits');

my $released = time;
$up->release('ivy');

my @ivy = $h->wait_all($ivy_first, $second);
my $woken = time - $released;

is($ivy[1]{status}, 200, 'the waiting one gets the lock');
ok($woken < 0.5 * $h->slowness, 'woken through the subscriber')
    or diag("woken after $woken s");
is($h->status->{webhook_lock_redis_master_switches_total}, 2,
   'each worker counted the switch');

$h2->done;

###############################################################################

# 6. every sentinel down: once the master is lost, the fail policy; the
# sentinels back: locks again, without a reload

my $master = $replica;

$_->stop for $rs->sentinels;

$mark = $h->log_mark;
$master->cmd('CLIENT', 'KILL', 'TYPE', 'normal');

ok($h->wait_for(sub { unavailable(post('carol')) }),
   'all sentinels down: 503 lock_unavailable');
$h->error_log_like(qr/redis 127\.0\.0\.1:\d+ sentinel $down: Connection refused/,
                   'all sentinels down: asked, logged', since => $mark);

$_->start for $rs->sentinels;

$held = lock_on($master, 'carol');

ok($held, 'the sentinels back: locked on the master');
is(unhold($held, 'carol'), 200, 'the sentinels back: forwarded');

###############################################################################

# 5. the sentinels' own password: a wrong one, Redis unreachable; the
# right one, locks; neither in the log

my $pw = RedisSentinel->new($h, prefix => 'pw', name => 'guarded',
                            sentinels => 1, quorum => 1, primary => $master,
                            sentinel_password => 'S3ntinel-pw');
my $guarded = 'redis://guarded sentinels=127.0.0.1:' . $pw->sentinel(0)->port;

$mark = $h->log_mark;

ok($h->reload(conf("$guarded sentinel_password=wr0ng-pw"), ready => 0),
   'reloaded with a wrong sentinel password');

ok($h->wait_for(sub { unavailable(post('dave')) }),
   'a wrong sentinel password: 503 lock_unavailable');
$h->error_log_like(qr/sentinel $down: "AUTH" failed/,
                   'the sentinel refused AUTH', since => $mark);
$h->error_log_like(qr/redis redis:\/\/guarded $down: no sentinel answered/,
                   'a wrong sentinel password: Redis unreachable',
                   since => $mark);

ok($h->reload(conf("$guarded sentinel_password=S3ntinel-pw")),
   'reloaded with the right sentinel password');

$held = lock_on($master, 'dave');

ok($held, 'the right sentinel password: locked on the master');
is(unhold($held, 'dave'), 200, 'forwarded');

unlike($h->error_log, qr/S3ntinel-pw|wr0ng-pw/, 'no password in the log');

###############################################################################

# 4. the master turned replica under a worker that still talks to it: its
# READONLY answer sends the worker to the sentinels again (a scripted
# sentinel here, told to name the new master; Redis does not close the
# clients of a master it demotes)

my $ra = $h->redis(name => 'ro_a');
my $rb = $h->redis(name => 'ro_b',
                   args => [ '--replicaof', '127.0.0.1', $ra->port ]);

sub sentinel_says {
    my ($r) = @_;
    my $port = $r->port;

    return [ [ 'SENTINEL' => "*2\r\n\$9\r\n127.0.0.1\r\n\$"
                             . length($port) . "\r\n$port" ],
             [ 'SUBSCRIBE' => { hang => 1 } ] ];
}

# first a sentinel wrong about it: a replica named is not taken (ROLE)

my $mock = $h->mock_redis(name => 'mock_sentinel',
                          rules => sentinel_says($rb));

ok($h->wait_for(sub {
       $rb->cmd('INFO', 'replication') =~ /master_link_status:up/ }),
   'a second replica in sync');

$mark = $h->log_mark;

ok($h->reload(conf('redis://mymaster sentinels=127.0.0.1:'
                   . $mock->port)),
   'reloaded with a scripted sentinel');

ok($h->wait_for(sub { unavailable(post('erin')) }),
   'a replica named: 503 lock_unavailable');
$h->error_log_like(qr/redis redis:\/\/mymaster $down: 127\.0\.0\.1:${\ $rb->port } is no master but a "slave"/,
                   'a replica named: logged', since => $mark);

$mock->set_rules(sentinel_says($ra));

$held = lock_on($ra, 'erin');

ok($held, 'locked on the master named');
is(unhold($held, 'erin'), 200, 'forwarded');

$mark = $h->log_mark;

is($rb->cmd('REPLICAOF', 'NO', 'ONE'), 'OK', 'the replica promoted');
is($ra->cmd('REPLICAOF', '127.0.0.1', $rb->port), 'OK',
   'the master demoted');
$mock->set_rules(sentinel_says($rb));

$held = lock_on($rb, 'frank');

ok($held, 'READONLY: locked on the new master');
is(unhold($held, 'frank'), 200, 'forwarded');

$h->error_log_like(qr/redis redis:\/\/mymaster $down: 127\.0\.0\.1:${\ $ra->port } is a replica now \(READONLY\)/,
                   'READONLY logged', since => $mark);

# a sentinel that names a host (resolve-hostnames yes): without a
# resolver it is refused, never looked up by a call that would block the
# worker; with one, it is resolved as webhook_redis's own names are

my $dns = NgxHarness::DNS->new($h, 'redis-ro-b.test' => '127.0.0.1');

sub sentinel_names {
    my ($name, $r) = @_;
    my $port = $r->port;

    return [ [ 'SENTINEL' => '*2' . "\r\n\$" . length($name) . "\r\n$name"
                             . "\r\n\$" . length($port) . "\r\n$port" ],
             [ 'SUBSCRIBE' => { hang => 1 } ] ];
}

$mock->set_rules(sentinel_names('redis-ro-b.test', $rb));

$mark = $h->log_mark;

ok($h->reload(conf('redis://mymaster sentinels=127.0.0.1:'
                   . $mock->port)),
   'reloaded: the sentinel names a host');

ok($h->wait_for(sub { unavailable(post('gina')) }),
   'a host named, no resolver: 503 lock_unavailable');
$h->error_log_like(qr/redis redis:\/\/mymaster $down: a host name to connect to, and no "resolver" in http/,
                   'a host named, no resolver: logged', since => $mark);
is($dns->queries('redis-ro-b.test'), 0, 'and not looked up');

ok($h->reload(conf('redis://mymaster sentinels=127.0.0.1:'
                   . $mock->port, '',
                   'resolver 127.0.0.1:%%PORT_DNS%% valid=1s ipv6=off;')),
   'reloaded with a resolver');

$held = lock_on($rb, 'gina');

ok($held, 'a host named, with a resolver: locked on the master');
is(unhold($held, 'gina'), 200, 'forwarded');
ok($dns->queries('redis-ro-b.test'), 'the name asked of the resolver');

# an ACL user not allowed ROLE (it is in @admin): its NOPERM lets the
# connection through, READONLY still tells a replica

my $racl = $h->redis(name => 'ro_acl',
                     args => [ '--user', 'gate', 'on', '>gate-pw', '~*',
                               '&*', '+@all', '-role' ]);

$mock->set_rules(sentinel_says($racl));

ok($h->reload(conf('redis://gate:gate-pw@mymaster sentinels=127.0.0.1:'
                   . $mock->port)),
   'reloaded: a master whose ACL user may not ask ROLE');

$held = lock_on($racl, 'hank');

ok($held, 'ROLE refused (NOPERM): locked on the master all the same');
is(unhold($held, 'hank'), 200, 'forwarded');
like($racl->cmd(CLIENT => 'LIST'), qr/\buser=gate\b/,
     'as the ACL user');

###############################################################################

# 7. the master killed: Sentinel's detection, then the failover; the fail
# policy meanwhile, locks again on the new master without a reload

ok($h->reload(conf("redis://mymaster sentinels=$sentinels", $dedup)),
   'reloaded with the sentinels');

$rs->wait_settled;

my $killed = time;
$master->kill;

my ($kim, %kim) = (undef);

ok($h->wait_for(sub {
       $kim = post('kim');
       $kim{ $kim->{status} // 0 }++;
       return $kim->{status} == 200;
   }, interval => 0.05), 'the master killed: locks again');

my $back = time - $killed;

# the sentinels that did not run the failover may switch a little later

ok($h->wait_for(sub { $rs->master(0) ne '127.0.0.1:' . $master->port }),
   'a new master');
ok($kim{503}, 'the master killed: 503 meanwhile');
is(scalar(grep { $_ != 200 && $_ != 503 } keys %kim), 0,
   'nothing else meanwhile');

my ($begun) = grep { $_->[0] > $killed } $rs->events(0, '+try-failover'),
                                         $rs->events(1, '+try-failover'),
                                         $rs->events(2, '+try-failover');
my ($moved) = grep { $_->[0] > $killed } $rs->switches(0);

diag(sprintf 'master killed: a failover begun %.3f s after, +switch-master '
     . '%.3f s after, locks again %.3f s after (%d refused meanwhile)',
     $begun ? $begun->[0] - $killed : -1, $moved ? $moved->[0] - $killed : -1,
     $back, $kim{503} // 0);

###############################################################################

$app->stop;
$h->done;
