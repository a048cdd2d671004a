#!/usr/bin/perl

# Long strings in a JSON body (the message text of a large webhook, a long
# key, a long sender): the module decodes them itself rather than through
# cJSON.  The values it finds, the body it forwards and every 400 with
# its byte offset are what they are for short strings.

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

my $headers = <<'CONF';
        proxy_set_header X-Senders $webhook_senders;
        proxy_set_header X-Ids $webhook_message_ids;
        proxy_set_header X-Inbox $webhook_inbox;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
CONF

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_body_buffer_size 256k;
    client_max_body_size 1m;

    location /whatsapp { webhook_lock whatsapp; $headers }

    location /json {
        webhook_lock json;
        webhook_sender from;
        webhook_message_id id;
        $headers
    }
}
CONF

# no answer here is a 503 but while the worker is still connecting to
# Redis (slow under sanitizers), which is not what this file is about

sub post {
    my ($uri, $body) = @_;
    my $res;

    for (1 .. 20) {
        $up->clear;
        $res = $h->request(POST => $uri, body => $body, timeout => 20);
        last if $res->{status} != 503;
        select undef, undef, undef, 0.25;
    }

    my ($req) = $up->requests;
    return ($res, $req);
}

sub detail {
    return eval { decode_json($_[0]{body})->{detail} } // '';
}

###############################################################################

# escapes of every kind, raw UTF-8 and a surrogate pair in a 64 KB text

my $text = join '', map {
    "line $_: caf\\u00e9 \\ud83d\\ude00 \xc3\xa9 \\\"q\\\" a\\/b \\\\ \\t\\n"
} 1 .. 1200;

my $wa = '{"object":"whatsapp_business_account","entry":[{"id":"W",'
    . '"changes":[{"field":"messages","value":{"metadata":'
    . '{"phone_number_id":"PN1"},"contacts":[{"wa_id":"111"}],'
    . '"messages":[{"from":"111","id":"wamid.1","type":"text",'
    . '"text":{"body":"' . $text . '"}}]}}]}]}';

my ($res, $req) = post('/whatsapp', $wa);
is($res->{status}, 200, 'long text with escapes: forwarded')
    or diag $res->{body};
is($req->{headers}{'x-senders'}, '111', 'the sender');
is($req->{headers}{'x-ids'}, 'wamid.1', 'the message id');
is($req->{headers}{'x-inbox'}, 'PN1', 'the inbox');
ok($req->{body} eq $wa, 'the body forwarded as it came');

# a long key and long values around the ones a path reaches

my $long = 'k' x 300;

($res, $req) = post('/json', qq({"$long":"$long","from":"a\\u00e9",)
                             . qq("x":["$long",{"$long":1}],"id":"7"}));
is($res->{status}, 200, 'long keys and values: forwarded')
    or diag $res->{body};
is($req->{headers}{'x-senders'}, "a\xc3\xa9", 'the sender after them');
is($req->{headers}{'x-ids'}, '7', 'the id after them');

# a long sender is refused as a short one over the limit is

($res) = post('/json', '{"from":"' . ('s' x 251) . '\u00e9\u00e9\u00e9",'
                       . '"id":"1"}');
is($res->{status}, 400, 'sender of 257 bytes: 400');
like(detail($res), qr/^sender longer than 256 bytes/,
     'sender longer than 256 bytes');

# errors in and around a long string, at the byte cJSON gives

my $pad = 'p' x 400;
my $body;

for my $t (
    [ 'unknown escape',       '\x' ],
    [ 'lone low surrogate',   '\udc00' ],
    [ 'unpaired high',        '\ud83dx' ],
    [ 'short \u at the end',  '\u12', '' ],
) {
    my ($name, $bad, $after) = @$t;

    $after //= $pad;
    $body = qq({"from":"a","text":"$pad$bad$after"});
    ($res) = post('/json', $body);
    is($res->{status}, 400, "$name in a long string: 400");
    is(detail($res), 'malformed JSON near byte ' . index($body, $bad),
       "$name: at its backslash");
}

$body = qq({"from":"a","text":"$pad\\x$pad","id":});
($res) = post('/json', $body);
is(detail($res), 'malformed JSON near byte ' . index($body, '\x'),
   'the first error wins: the escape before the missing value');

$body = qq({"text":"$pad" "from":"a"});
($res) = post('/json', $body);
is(detail($res), 'malformed JSON near byte ' . index($body, '"from'),
   'a missing ":" after a long string');

$body = qq({"from":"a","text":"$pad"} "$pad\\x");
($res) = post('/json', $body);
is(detail($res), 'trailing data at byte ' . (index($body, qq( "$pad)) + 1),
   'a long string after the value: trailing data');

$body = qq({"from":"a","text":"$pad");
($res) = post('/json', $body);
is(detail($res), 'malformed JSON near byte ' . (length($body) - 1),
   'no "}" after a long string');

$body = qq(["$pad", "$pad\xc0\xaf"]);
($res) = post('/json', $body);
is(detail($res), 'invalid UTF-8 at byte ' . index($body, "\xc0"),
   'overlong UTF-8 in a long string');

is_deeply($redis->settled_keys, [], 'every lock released');

$h->done;
