#!/usr/bin/perl

# With a "resolver" in the http block, the name in webhook_redis is
# resolved by nginx's resolver each time a worker connects, without
# blocking: Redis in a container whose address changes on restart is
# followed without a reload.  Without a resolver, the name is resolved once
# when nginx reads its configuration.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use NgxHarness;
use NgxHarness::DNS;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $dns = NgxHarness::DNS->new($h);
my $up = $h->upstream;

# the same port on another loopback address: the container, moved

$h->port('redis_b', $redis->port);

my $conf = <<'CONF';
resolver 127.0.0.1:%%PORT_DNS%% valid=1s ipv6=off;
resolver_timeout 5s;

webhook_redis redis://redis.test:%%PORT_REDIS%% connect_timeout=5s
              timeout=5s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock   json;
        webhook_sender from;
        webhook_inbox  inbox;
        webhook_redis_fail closed;

        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /status {
        webhook_status;
    }
}
CONF

sub post {
    my ($from, %opts) = @_;
    return $h->request(POST => '/hook',
                       body => encode_json({ inbox => 'i1', from => $from }),
                       %opts);
}

sub connected {
    my $res = $h->request(GET => '/status?format=json');
    my $json = eval { decode_json($res->{body}) } // {};
    return $json->{webhook_lock_redis_connected_workers} // 0;
}

# a lock taken now lands in this Redis

sub locks_in {
    my ($r, $from) = @_;

    my $hd = $h->request_async(POST => '/hook',
                               body => encode_json({ inbox => 'i1',
                                                     from => $from }),
                               headers => { 'X-Test-Hold' => $from });

    my $n = $up->arrived + 1;
    my $in = $h->wait_for(sub { $up->arrived >= $n || $h->done_async($hd) })
             && !$h->done_async($hd)
             && grep { /\Q$from\E/ } @{ $r->cmd(KEYS => '*') };

    $up->release($from);
    my ($res) = $h->wait_all($hd);

    return $in && $res->{status} == 200;
}

###############################################################################

$h->config_ok($conf =~ s/redis\.test/nowhere.test/r,
              'with a resolver, a name unknown yet passes nginx -t');

# the name unknown at start: nginx starts, the fail policy applies

my $mark = $h->log_mark;

$h->start($conf, ready => 0);

my $master = $h->master_pid;
my @workers = $h->worker_pids;

ok($h->wait_for(sub { $dns->queries('redis.test') }),
   'the worker asked the resolver');

$h->error_log_like(qr/redis redis:\/\/redis\.test:\d+ is unreachable: /
                   . qr/redis\.test could not be resolved \(3: /,
                   'the failed resolution is logged', since => $mark,
                   timeout => 10);

my $res = post('alice');
is($res->{status}, 503, 'meanwhile: 503');
like($res->{body}, qr/"lock_unavailable"/, 'lock_unavailable');

# the name appears: the next reconnect resolves it

$dns->set('redis.test' => '127.0.0.1');

ok($h->wait_for(\&connected), 'connected once the name resolves');
ok(locks_in($redis, 'bob'), 'the lock is in the Redis at 127.0.0.1');

# the container restarts elsewhere: the connection lost, the name
# resolved again, the new address used

$dns->set('redis.test' => '127.0.0.2');
my $asked = $dns->queries('redis.test');

$redis->stop;
my $moved = $h->redis(name => 'redis_b', host => '127.0.0.2');

ok($h->wait_for(sub { $dns->queries('redis.test') > $asked
                      && connected() }),
   'connected again after asking the resolver again');
ok(locks_in($moved, 'carol'), 'the lock is in the Redis at 127.0.0.2');

is($h->master_pid, $master, 'no restart');
is_deeply([ $h->worker_pids ], \@workers, 'no reload: the same worker');

$h->stop;

# a young worker whose name server is slow: requests wait for the
# connection, the resolution included, rather than get the fail policy

SKIP: {
    my ($version) = $h->run_nginx('-V');

    skip 'nginx without --with-debug', 3
        unless $version =~ /--with-debug/;

    $dns->hold;
    $asked = $dns->queries('redis.test');

    $mark = $h->log_mark;
    $h->start($conf, ready => 0);

    ok($h->wait_for(sub { $dns->queries('redis.test') > $asked }),
       'a new worker asks the resolver, the answer held');

    my $hd = $h->request_async(POST => '/hook',
                               body => encode_json({ inbox => 'i1',
                                                     from => 'erin' }));

    $h->error_log_like(qr/waits for the connection/,
                       'a request meanwhile waits for the connection',
                       since => $mark, timeout => 10);

    $dns->release;

    is(($h->wait_all($hd))[0]{status}, 200,
       'and is let in once the name resolves');

    $h->stop;
}

# without a resolver: resolved once, from the configuration

$redis->start;

$h->start(<<'CONF');
webhook_redis redis://localhost:%%PORT_REDIS%% connect_timeout=10s
              timeout=10s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock   json;
        webhook_sender from;
        webhook_inbox  inbox;

        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

my $before = $dns->queries('localhost');

ok(locks_in($redis, 'dave'), 'without a resolver: a name resolved at start');
is($dns->queries('localhost'), $before, 'and nginx\'s resolver not used');

$h->done();
