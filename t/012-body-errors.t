#!/usr/bin/perl

# A body that nginx refuses while reading it (over client_max_body_size
# when chunked, broken chunking, a temp file that cannot be written) ends
# in nginx's own error, and an error_page that serves a static file takes
# over: the client gets that page, the connection is closed, and nothing
# is left waiting in the worker or sent to Redis.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis http_stub_status/]);
my $redis = $h->redis;
my $up = $h->upstream;

$h->write_file('errors/413.html', "too large, from error_page\n");
$h->write_file('errors/400.html', "bad request, from error_page\n");
$h->write_file('errors/500.html', "server error, from error_page\n");

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format gate '$status $webhook_lock_status';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_max_body_size 2k;
    client_body_buffer_size 1k;

    access_log %%TESTDIR%%/gate.log gate;

    error_page 400 /errors/400.html;
    error_page 413 /errors/413.html;
    error_page 500 /errors/500.html;

    location /errors/ {
        # the redirected request still carries the refused body's length
        client_max_body_size 64k;
        root %%TESTDIR%%;
    }

    location /hook {
        webhook_lock json;
        webhook_sender from;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /spool {
        webhook_lock json;
        webhook_sender from;
        client_body_temp_path %%TESTDIR%%/spool;
        client_max_body_size 64k;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location = /status {
        stub_status;
    }
}
CONF

# commands Redis ran, but the INFO that asks

sub redis_calls {
    my $info = $redis->cmd('INFO', 'commandstats');
    my $n = 0;

    while ($info =~ /^cmdstat_(\w+):calls=(\d+)/mg) {
        $n += $2 unless $1 eq 'info';
    }

    return $n;
}

# stub_status counts the status request itself: 1 when nothing else is open

sub open_connections {
    my $res = $h->request(GET => '/status');
    return $res->{body} =~ /Active connections: (\d+)/ ? $1 : -1;
}

sub connections_settle {
    my $n;

    for (1 .. 250 * $h->slowness) {
        $n = open_connections();
        return $n if $n == 1;
        select undef, undef, undef, 0.02;
    }

    return $n;
}

my $body = '{"from":"alice","pad":"' . ('x' x 6000) . '"}';
my $calls = redis_calls();

###############################################################################

# over client_max_body_size, chunked: the size is known only while reading

for my $slow (0, 0.05) {
    my $how = $slow ? 'read in pieces' : 'read at once';

    my $res = $h->request(POST => '/hook', body => $body, chunked => 1,
                          chunk_size => 1024, slow => $slow, timeout => 10);

    is($res->{status}, 413, "chunked over the limit, $how: 413");
    is($res->{body}, "too large, from error_page\n",
       "chunked over the limit, $how: error_page served");
    is(connections_settle(), 1,
       "chunked over the limit, $how: no connection left");
}

# the same with a Content-Length, refused before the body is read

my $res = $h->request(POST => '/hook', body => $body);
is($res->{status}, 413, 'Content-Length over the limit: 413');
is($res->{body}, "too large, from error_page\n",
   'Content-Length over the limit: error_page served');

###############################################################################

# broken chunking

for my $slow (0, 1) {
    my $how = $slow ? 'after a first chunk' : 'at once';
    my $raw = "POST /hook HTTP/1.1\r\nHost: localhost\r\n"
            . "Content-Type: application/json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\n"
            . "5\r\n{\"fro\r\n";

    my @later = ("zz\r\nnot a chunk\r\n\r\n");

    if ($slow) {
        $res = $h->request(POST => '/hook', raw => [$raw, @later],
                           slow => 0.1, timeout => 10);

    } else {
        $res = $h->request(POST => '/hook', raw => $raw . $later[0],
                           timeout => 10);
    }

    is($res->{status}, 400, "broken chunking $how: 400");
    is($res->{body}, "bad request, from error_page\n",
       "broken chunking $how: error_page served");
    is(connections_settle(), 1, "broken chunking $how: no connection left");
}

###############################################################################

# the temp file cannot be written: the worker (not root) finds its spool
# directory closed

SKIP: {
    skip 'workers run as root: a closed directory stays writable', 3
        if grep { (stat "/proc/$_")[4] == 0 } $h->worker_pids;

    chmod 0, $h->testdir . '/spool' or die "chmod: $!";

    $res = $h->request(POST => '/spool', timeout => 10,
                       body => '{"from":"alice","pad":"' . ('x' x 20000) . '"}');

    chmod 0700, $h->testdir . '/spool';

    is($res->{status}, 500, 'temp file refused: 500');
    is($res->{body}, "server error, from error_page\n",
       'temp file refused: error_page served');
    is(connections_settle(), 1, 'temp file refused: no connection left');
}

###############################################################################

is(redis_calls(), $calls, 'nothing sent to Redis for refused bodies');
is(scalar $up->requests, 0, 'nothing reached the upstream');

# the gate still works after all this

$res = $h->request(POST => '/hook', body => '{"from":"alice"}');
is($res->{status}, 200, 'a good body passes afterwards');

$h->done(allow => qr/open\(\) "[^"]*spool[^"]*" failed \(13: /);
