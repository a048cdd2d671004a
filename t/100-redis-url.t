#!/usr/bin/perl

# webhook_redis as a URL, the way Chatwoot's REDIS_URL is written: a Redis
# 6 ACL user and a password, percent-decoded, the database in the path;
# bad URLs fail "nginx -t" with the file and line, and no password is ever
# written to a log, not even at debug level.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);

# the ACL user's password has every character a URL must escape

my $password = 'p@ss:w/rd%';
my $escaped = 'p%40ss%3Aw%2Frd%25';

my $redis = $h->redis(password => 'default-secret',
                      args => [ '--user', 'gate', 'on', ">$password",
                                '~*', '&*', '+@all' ]);
my $up = $h->upstream;

sub location {
    my ($redis_line, %opts) = @_;

    return "webhook_redis $redis_line;\n" . <<"CONF";
server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /hook {
        webhook_lock   json;
        webhook_sender from;
        webhook_inbox  inbox;
        webhook_redis_fail closed;
        webhook_retry_after 3;

        proxy_set_header X-Lock \$webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF
}

sub post {
    my ($from, %opts) = @_;
    return $h->request(POST => '/hook',
                       body => encode_json({ inbox => 'i1', from => $from }),
                       %opts);
}

###############################################################################

# nginx -t: the forms accepted

$h->config_ok(location('redis://127.0.0.1'), 'a URL with the host only');
$h->config_ok(location('redis://:secret@127.0.0.1:6380/2 timeout=1s'),
              'a URL with a password, a port and a database');
$h->config_ok(location("redis://gate:$escaped\@localhost:6379/0 "
                       . 'connect_timeout=1s max_pending=10'),
              'a URL with an ACL user and a name resolved now');
$h->config_ok(location('redis://[::1]:6379/1'), 'an IPv6 address');
$h->config_ok(location('redis://:x@127.0.0.1/0 password=y db=4'),
              'password= and db= beside a URL');
$h->config_ok(location('redis://mymaster/1 '
                       . 'sentinels=127.0.0.1:26379,127.0.0.1:26380,'
                       . 'localhost sentinel_password=s'),
              'Sentinel: the master name as the host');
$h->config_ok(location('redis://mymaster '
                       . '"sentinels=127.0.0.1:26379, 127.0.0.1"'),
              'sentinels written as REDIS_SENTINELS, with a space');
$h->config_ok(location('127.0.0.1:6379 password=x db=1'),
              'the host:port form as before');

# nginx -t: the forms refused, each with the file and line

my @bad = (
    [ 'redis://', qr/no host in "redis:\/\/"/, 'no host' ],
    [ 'redis://127.0.0.1:http', qr/invalid port/, 'a port not a number' ],
    [ 'redis://127.0.0.1/x', qr/invalid database in "redis:\/\/127/,
      'a database not a number' ],
    [ 'redis://gate@127.0.0.1', qr/has no password/,
      'a user without a password' ],
    [ 'redis://:p%zz@127.0.0.1', qr/invalid percent-encoding/,
      'a bad percent-encoding' ],
    [ 'redis://127.0.0.1/0?ssl=true',
      qr/"redis:\/\/127\.0\.0\.1\/0" of "webhook_redis" has a query/,
      'a query string' ],
    [ 'redis://unix:/tmp/redis.sock', qr/no unix socket in a URL/,
      'a unix socket in a URL' ],
    [ '127.0.0.1:6379 sentinels=127.0.0.1:26379',
      qr/"sentinels=" needs a redis:\/\/ URL/, 'sentinels without a URL' ],
    [ 'redis://m sentinels=127.0.0.1:26379,,127.0.0.1:26380',
      qr/empty address in "sentinels=/, 'an empty sentinel address' ],
    [ 'redis://127.0.0.1 sentinel_password=x',
      qr/"sentinel_password=" without "sentinels="/,
      'a sentinel password without sentinels' ],
    [ 'rediss://mymaster sentinels=127.0.0.1:26379',
      qr/Sentinel over TLS is not supported/, 'Sentinel with rediss://' ],
    [ 'redis://127.0.0.1 tls_ca=/etc/ssl/certs/ca-certificates.crt',
      qr/"tls_ca=[^"]*" needs a rediss:\/\/ URL/, 'TLS with redis://' ],
    [ 'redis://no-such-host.invalid:6379',
      qr/host not found in "no-such-host\.invalid" of "webhook_redis"/,
      'a name that does not resolve' ],
);

for my $bad (@bad) {
    my ($line, $re, $name) = @$bad;
    $h->config_fails(location($line), qr/(?:$re).*\.conf:\d+/, $name);
}

# nginx -t never echoes a password

my @secret = (
    [ 'redis://gate:hunter2@no-such-host.invalid', 'host not found' ],
    [ 'redis://gate:hunter2@127.0.0.1/x', 'a bad database' ],
    [ 'redis://gate:hunter2@127.0.0.1/0?x', 'a query' ],
    [ 'redis://127.0.0.1/0?password=hunter2', 'a password in a query' ],
    [ 'redis://gate:hunter2%zz@127.0.0.1', 'a bad escape' ],
    [ 'redis://hunter2@127.0.0.1', 'a password written as the user' ],
    [ 'redis://:x@127.0.0.1 password=hunter2 bogus=1',
      'a bad parameter after password=' ],
    [ 'redis://m sentinels=127.0.0.1 sentinel_password=hunter2 '
      . 'sentinel_password=', 'an empty sentinel_password=' ],
);

for my $s (@secret) {
    my $out = $h->config_fails(location($s->[0]), qr/\[emerg\]/,
                               "$s->[1]: refused");
    unlike($out, qr/hunter2/, "$s->[1]: the password is not echoed");
}

###############################################################################

# the ACL user, its password percent-decoded, the database from the path

my $port = $redis->port;

$h->start(location("redis://gate:$escaped\@127.0.0.1:%%PORT_REDIS%%/3 "
                   . 'connect_timeout=10s timeout=10s'));

my $hd = $h->request_async(POST => '/hook',
                           body => encode_json({ inbox => 'i1',
                                                 from => 'alice' }),
                           headers => { 'X-Test-Hold' => 'acl' });

ok($up->wait_arrived(1), 'the request went in');

$redis->cmd(SELECT => 3);
my $keys = $redis->cmd(KEYS => '*');
is(scalar @$keys, 1, 'its lock is in database 3');
$redis->cmd(SELECT => 0);
is_deeply($redis->cmd(KEYS => '*'), [], 'and not in database 0');

like($redis->cmd(CLIENT => 'LIST'), qr/\buser=gate\b/,
     'nginx is logged in as the ACL user');

is(post('alice')->{status}, 503, 'the same sender meanwhile: 503');

$up->release('acl');
is(($h->wait_all($hd))[0]{status}, 200, 'the held request passes');

$redis->cmd(SELECT => 3);
ok($h->wait_for(sub { !@{ $redis->cmd(KEYS => '*') } }), 'lock released');
$redis->cmd(SELECT => 0);

$h->stop;

# password= wins over the URL's, as REDIS_PASSWORD beside REDIS_URL

$h->start(location("redis://gate:wrong\@127.0.0.1:%%PORT_REDIS%% "
                   . "password=$password connect_timeout=10s timeout=10s"));

is(post('bob')->{status}, 200, 'password= replaces the URL\'s');

$h->stop;

# a wrong password: the fail policy, the reason logged, never the password

my $mark = $h->log_mark;

$h->start(location("redis://gate:not-$escaped\@127.0.0.1:%%PORT_REDIS%%/3 "
                   . 'connect_timeout=10s timeout=10s'),
          ready => 0);

$h->error_log_like(qr{redis redis://gate\@127\.0\.0\.1:\d+/3 is unreachable: }
                   . qr{"AUTH" failed: WRONGPASS},
                   'the refusal is logged with the URL, without password',
                   timeout => 10, since => $mark);

my $res = post('carol');
is($res->{status}, 503, 'wrong password: 503 under fail closed');
like($res->{body}, qr/"lock_unavailable"/, 'lock_unavailable');

$h->stop;

my $log = $h->error_log;

unlike($log, qr/\Q$password\E|\Q$escaped\E|not-p/,
       'no password in the error log, debug lines included');

$h->done();
