#!/usr/bin/perl

# The payload gate: what passes untouched, what is refused with which JSON
# answer, and that a forwarded request reaches the upstream byte for byte,
# whether its body sat in memory, came chunked or slowly, or was spooled to
# a temp file.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream;

$h->start(<<'CONF');
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format gate '$request_method $status $webhook_lock_status';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_body_buffer_size 16k;
    client_max_body_size 4m;

    access_log %%TESTDIR%%/gate.log gate;

    location /hook {
        webhook_lock json;
        webhook_sender from;
        webhook_message_id id;

        proxy_set_header X-Lock $webhook_lock_status;
        proxy_set_header X-Sender $webhook_sender;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wa {
        webhook_lock whatsapp;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /sms {
        webhook_lock twilio;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

# how many commands Redis has run: a refused body must send none
sub redis_calls {
    my $info = $redis->cmd('INFO', 'commandstats');
    my $n = 0;
    $n += $1 while $info =~ /^cmdstat_\w+:calls=(\d+)/mg;
    return $n;
}

sub log_lines { split /\n/, $h->read_file('gate.log') }

# the access log line of the request just answered: nginx writes it
# after the response, so wait for the log to grow past $before lines
sub last_status {
    my ($before) = @_;
    my @lines;

    for (1 .. 50) {
        @lines = log_lines();
        last if @lines > $before;
        select undef, undef, undef, 0.02;
    }

    return $lines[-1] // '';
}

sub refused {
    my ($res, $status, $error, $name) = @_;

    is($res->{status}, $status, "$name: $status");
    is($res->{headers}{'content-type'}, 'application/json',
       "$name: JSON answer");

    my $json = eval { decode_json($res->{body}) } // {};
    is($json->{error}, $error, "$name: error $error");

    return $json;
}

###############################################################################

# methods other than POST pass untouched

my $res = $h->request(GET => '/wa?hub.mode=subscribe&hub.challenge=1158201444'
                             . '&hub.verify_token=meatyhamhock');
is($res->{status}, 200, 'GET passes');
my ($req) = $up->requests;
is($req->{method}, 'GET', 'GET reached the upstream');
like($req->{uri}, qr/hub\.challenge=1158201444/, 'query untouched');
is($req->{headers}{'x-lock'}, undef, 'GET not inspected');
$up->clear;

$res = $h->request(PUT => '/hook', body => 'not json at all');
is($res->{status}, 200, 'PUT passes, not parsed');
is(scalar $up->requests, 1, 'PUT reached the upstream');
$up->clear;

###############################################################################

# content types

$res = $h->request(POST => '/hook', body => '{"from":"a"}',
                   headers => { 'Content-Type' => 'text/plain' });
refused($res, 415, 'unsupported_media_type', 'text/plain');

$res = $h->request(POST => '/hook', body => '{"from":"a"}',
                   headers => { 'Content-Type' => undef });
refused($res, 415, 'unsupported_media_type', 'no content type');

$res = $h->request(POST => '/hook', body => '{"from":"a"}',
                   headers => { 'Content-Type' => 'application/jsonx' });
refused($res, 415, 'unsupported_media_type', 'application/jsonx');

$res = $h->request(POST => '/sms', body => '{"From":"a"}');
refused($res, 415, 'unsupported_media_type', 'JSON to a form format');

$res = $h->request(POST => '/hook', body => '{"from":"ct"}',
                   headers => { 'Content-Type' =>
                                'Application/JSON; charset=utf-8' });
is($res->{status}, 200, 'JSON with parameters, any case, accepted');

is(scalar(grep { $_->{headers}{'x-sender'} } $up->requests), 1,
   'only the accepted one reached the upstream');
$up->clear;

###############################################################################

# malformed bodies: 400 with a detail, nothing forwarded, nothing locked

$redis->settled_keys;    # the last release is in
my $calls = redis_calls();
my $deep = ('[' x 200) . (']' x 200);
my $long = 'x' x 257;

my @bad = (
    [ 'empty body',        ''                              ],
    [ 'white space only',  "  \n "                         ],
    [ 'malformed JSON',    '{"from":'                      ],
    [ 'trailing garbage',  '{"from":"a"} xyz'              ],
    [ 'two values',        '{"from":"a"}{"from":"b"}'      ],
    [ 'invalid UTF-8',     qq({"from":"a\xff\xfe"})        ],
    [ 'overlong UTF-8',    qq({"from":"\xc0\xaf"})         ],
    [ 'NUL byte',          qq({"from":"a\0b"})             ],
    [ 'deep nesting',      qq({"from":"a","x":$deep})      ],
    [ 'sender too long',   qq({"from":"$long"})            ],
    [ 'id too long',       qq({"from":"a","id":"$long"})   ],
);

for my $case (@bad) {
    my ($name, $body) = @$case;
    my $before = () = log_lines();

    $res = $h->request(POST => '/hook', body => $body);
    my $json = refused($res, 400, 'invalid_payload', $name);
    ok(length($json->{detail} // ''), "$name: has a detail")
        or diag $res->{body};
    like(last_status($before), qr/^POST 400 invalid$/,
         "$name: status invalid");
}

$res = $h->request(POST => '/wa', body => '[{"entry":[]}]');
refused($res, 400, 'invalid_payload', 'whatsapp body not an object');

$res = $h->request(POST => '/sms', body => 'From=%zz&Body=hi',
                   headers => { 'Content-Type' =>
                                'application/x-www-form-urlencoded' });
refused($res, 400, 'invalid_payload', 'malformed form body');

is(scalar $up->requests, 0, 'no malformed body reached the upstream');
is(redis_calls() - $calls, 1,
   'no malformed body sent Redis anything (1: the INFO asking)');

###############################################################################

# forwarded bodies are byte-identical, headers too

my $odd = qq({ "from" : "b\\u00e9",\n\t"id":"m1", "text":"caf\xc3\xa9 \\"q\\"" }  \n);

$res = $h->request(POST => '/hook?x=1', body => $odd,
                   headers => { 'X-Custom' => 'kept', 'Content-Type' =>
                                'application/json; charset=utf-8' });
is($res->{status}, 200, 'odd but valid JSON forwarded');
($req) = $up->requests;
is($req->{body}, $odd, 'body byte-identical');
is($req->{uri}, '/hook?x=1', 'URI untouched');
is($req->{headers}{'x-custom'}, 'kept', 'headers kept');
is($req->{headers}{'content-type'}, 'application/json; charset=utf-8',
   'content type kept');
is($req->{headers}{'x-lock'}, 'acquired', 'forwarded under a lock');
is($req->{headers}{'x-sender'}, "b\xc3\xa9", 'unicode escape decoded');
$up->clear;

# chunked, and slow: the body arrives after the handler first ran

my $body = encode_json({ from => 'chunky', id => 'c1', text => 'y' x 5000 });

$res = $h->request(POST => '/hook', body => $body, chunked => 1,
                   chunk_size => 1000);
is($res->{status}, 200, 'chunked body forwarded');
($req) = $up->requests;
is($req->{body}, $body, 'chunked body byte-identical');
is($req->{headers}{'x-sender'}, 'chunky', 'chunked body parsed');
$up->clear;

$res = $h->request(POST => '/hook', body => $body, chunked => 1,
                   chunk_size => 2000, slow => 0.1);
is($res->{status}, 200, 'slow body forwarded');
($req) = $up->requests;
is($req->{body}, $body, 'slow body byte-identical');
is($req->{headers}{'x-lock'}, 'acquired', 'slow body locked');
$up->clear;

# a 2 MB body spooled to a temp file (client_body_buffer_size 16k)

$body = encode_json({ from => 'big', id => 'b1', text => 'z' x (2 << 20) });

$res = $h->request(POST => '/hook', body => $body, timeout => 30);
is($res->{status}, 200, '2 MB body forwarded');
($req) = $up->requests;
ok($req->{body} eq $body, '2 MB body byte-identical');
is($req->{headers}{'x-sender'}, 'big', '2 MB body parsed from the file');
$h->error_log_like(qr/a client request body is buffered to a temporary/,
                   'the 2 MB body was in a temp file');
$up->clear;

$res = $h->request(POST => '/hook', body => 'z' x (5 << 20), timeout => 30);
is($res->{status}, 413, 'over client_max_body_size: 413');

# a client that goes away in the middle of its body

my $logged = length $h->read_file('gate.log');

$h->request(POST => '/hook', abort_after => 0.3, raw =>
            "POST /hook HTTP/1.1\r\nHost: localhost\r\n"
            . "Content-Type: application/json\r\n"
            . "Content-Length: 100000\r\n\r\n{\"from\":\"half\",");

# nginx is done with it once it is in the access log
ok($h->wait_for(sub { length $h->read_file('gate.log') > $logged }),
   'the aborted request was logged');
is(scalar $up->requests, 0, 'aborted body not forwarded');

###############################################################################

# no sender: forwarded without a lock

$res = $h->request(POST => '/hook', body => '{"id":"status-only"}');
is($res->{status}, 200, 'body without a sender forwarded');
($req) = $up->requests;
is($req->{headers}{'x-lock'}, 'bypass', 'bypass, no lock');
is($req->{headers}{'x-sender'}, undef, 'no sender');

is_deeply($redis->settled_keys, [], 'every lock was released');

$h->done;
