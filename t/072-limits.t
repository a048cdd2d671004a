#!/usr/bin/perl

# The attack surface: secrets (the Redis password, signature secrets) never
# reach the log, even at debug level; hostile bodies (ten thousand senders,
# deep nesting, a megabyte of tiny values, crowds of contacts) are answered
# at once, with a 400 or with bounded work, and send Redis nothing when
# refused; keys and values stay within their caps and carry no control
# character into a log line or a proxied header.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw/hmac_sha256_hex/;
use JSON::PP;
use Time::HiRes qw/time sleep/;
use NgxHarness;
use Provider;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $slow = $h->slowness;          # time limits under valgrind or ASan

my $password = 'pw-Zq8Rk2Vn5Xh7';
my $wrong = 'pw-Wr0ngWr0ng42';
my $secret = 'sig-Hd93Kf02Lm8P';

my $redis = $h->redis(password => $password);
my $up = $h->upstream;

# signatures may not be there yet: tested when nginx -t takes them

my $sigconf = <<"CONF";
    location /signed {
        webhook_lock whatsapp;
        webhook_signature $secret;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
CONF

my ($rc) = $h->config_test(<<"CONF");
webhook_redis 127.0.0.1:1;
server { listen 127.0.0.1:%%PORT_NGINX%%; $sigconf }
CONF

my $signatures = $rc == 0;
$sigconf = '' unless $signatures;

sub conf {
    my ($pw) = @_;

    return <<"CONF";
webhook_redis 127.0.0.1:%%PORT_REDIS%% password=$pw timeout=5s;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_max_body_size 4m;
    client_body_buffer_size 4m;

    location /hook {
        webhook_lock json;
        webhook_sender [*].from data[*].from from;
        webhook_message_id [*].id data[*].id id;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /wa {
        webhook_lock whatsapp;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /header {
        webhook_lock json;
        webhook_sender from;
        proxy_set_header X-Sender \$webhook_sender;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /sms {
        webhook_lock twilio;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /uri {
        webhook_lock json;
        webhook_sender from;
        webhook_lock_key \$uri:\$webhook_sender;
        proxy_set_header X-Lock \$webhook_lock_status;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
$sigconf
}
CONF
}

$h->start(conf($password));

sub post {
    my ($uri, $body, %opts) = @_;

    my $t = time;
    my $res = $h->request(POST => $uri, body => $body, timeout => 20,
                          %opts);
    $res->{took} = time - $t;

    return $res;
}

sub redis_calls {
    my $info = $redis->cmd('INFO', 'commandstats');
    my $n = 0;
    $n += $1 while $info =~ /^cmdstat_\w+:calls=(\d+)/mg;
    return $n;
}

sub detail {
    return eval { decode_json($_[0]{body})->{detail} } // '';
}

###############################################################################

# secrets

my $res = post('/hook', '{"from":"a","id":"1"}');
is($res->{status}, 200, 'locked with a password');

if ($signatures) {
    my $body = Provider::whatsapp_body(from => '15550009999', id => 'w1');

    $res = post('/signed', $body, headers => {
        'X-Hub-Signature-256' => 'sha256=' . hmac_sha256_hex($body, $secret)
    });
    is($res->{status}, 200, 'signed body accepted');

    # nginx's debug log shows the headers a client sent, the signature
    # of a signed body among them: what the gate expected for an unsigned
    # or wrongly signed body must not show anywhere

    $body = Provider::whatsapp_body(from => '15550009999', id => 'w2');

    $res = post('/signed', $body,
                headers => { 'X-Hub-Signature-256' => 'sha256=' . 'ab' x 32 });
    is($res->{status}, 401, 'wrong signature refused');

    $res = post('/signed', $body);
    is($res->{status}, 401, 'unsigned body refused');

    my $expected = hmac_sha256_hex($body, $secret);

    $h->no_error_log(qr/\Q$expected\E/i,
                     'the signature expected is not logged');
}

# a wrong password: Redis refuses AUTH, which is logged without it

ok($h->reload(conf($wrong), ready => 0), 'reloaded with a wrong password');
$h->error_log_like(qr/WRONGPASS|invalid password|AUTH/i,
                   'the refused AUTH is logged', timeout => 3);

$res = post('/hook', '{"from":"a","id":"2"}');
is($res->{status}, 503, 'no lock without AUTH: 503');

ok($h->reload(conf($password)), 'reloaded with the password');

my $log = $h->error_log . $h->read_file('stderr.log');

ok(length $log > 10000, 'the debug log has plenty to say')
    or diag length $log;
unlike($log, qr/\Q$password\E/, 'the Redis password is never logged');
unlike($log, qr/\Q$wrong\E/, 'nor the wrong one');
unlike($log, qr/\Q$secret\E/, 'nor the signature secret') if $signatures;

my $out = $h->config_fails(<<"CONF", qr/invalid parameter "db=x"/,
webhook_redis 127.0.0.1:1 password=$password db=x;
CONF
                           'a bad webhook_redis parameter');
unlike($out, qr/\Q$password\E/, 'its message names no password');

$h->config_fails(<<"CONF", qr/invalid parameter "password="/,
webhook_redis 127.0.0.1:1 password= db=1;
CONF
                 'an empty password');

###############################################################################

# caps: values, keys

my $v256 = 'v' x 256;

$res = post('/hook', encode_json({ from => $v256, id => $v256 }));
is($res->{status}, 200, 'a 256-byte sender and id are taken');

$res = post('/hook', encode_json({ from => "${v256}x" }));
is($res->{status}, 400, 'a 257-byte sender is refused');
like(detail($res), qr/longer than 256/, 'with a detail saying so');

# control characters: a value goes into log lines as it is, and a "\n"
# decoded from the body would forge one

my $mark = $h->log_mark;

for my $case ([ 'sender', '{"from":"a\\n2026/01/01 00:00:00 [emerg] FORGED"}' ],
              [ 'message id', '{"from":"a","id":"x\\u001b[31mred"}' ],
              [ 'sender', '{"from":"tab\\there"}' ],
              [ 'sender', '{"from":"del\\u007f"}' ])
{
    my ($role, $body) = @$case;

    $res = post('/hook', $body);
    is($res->{status}, 400, "$role with a control character: 400");
    like(detail($res), qr/^\Q$role\E with a control character/,
         'with a detail saying so');
}

# the same again, while a first one is in the app: busy is logged, with
# the key, where a forged line would show

my $forged = '{"from":"b\\n2026/01/01 00:00:00 [emerg] FORGED"}';
my ($first) = $h->wait_all($h->request_async(POST => '/hook',
                                            body => $forged));
$res = post('/hook', $forged);
is($res->{status}, 400, 'a forged line again: 400, not busy');

$res = post('/sms', 'From=%2B1555%0A[emerg] FORGED&Body=hi',
            headers => { 'Content-Type' =>
                         'application/x-www-form-urlencoded' });
is($res->{status}, 400, 'a form field with a newline: 400');

$h->no_error_log(qr/FORGED/, 'no forged log line', since => $mark);

# nor headers: nginx copies a variable into proxy_set_header as it is

$up->clear;

$res = post('/header', '{"from":"a\\r\\nX-Injected: yes"}');
is($res->{status}, 400, 'a sender with CRLF: 400');

$res = post('/header', '{"from":"plain"}');
is($res->{status}, 200, 'a plain sender passes');

my @seen = $up->requests;
is(scalar @seen, 1, 'only the plain one reached the upstream');
is($seen[0]{headers}{'x-injected'}, undef, 'no header injected');
is($seen[0]{headers}{'x-sender'}, 'plain', 'X-Sender as sent');

$res = post('/hook', encode_json({ from => "caf\x{e9} \x{1f600}" }));
is($res->{status}, 200, 'printable non-ASCII is a value like any other');

# a key template over 1024 bytes: logged, that sender not locked

my $long = '/uri/' . ('u' x 1100);

$res = post($long, '{"from":"k"}');
is($res->{status}, 200, 'a key over 1024 bytes: forwarded');
is(($up->requests)[-1]{headers}{'x-lock'}, 'bypass', 'unlocked (bypass)');
$h->error_log_like(qr/webhook lock key of \d+ bytes is too long/,
                   'and logged');

###############################################################################

# hostile bodies: answered at once, Redis untouched when refused

my $calls = redis_calls();

my $many = encode_json([ map { { from => "s$_", id => "m$_" } } 1 .. 10000 ]);

$res = post('/hook', $many);
is($res->{status}, 400, '10,000 senders: 400');
like(detail($res), qr/more than 100 senders/, 'more than 100 senders');
ok($res->{took} < 5 * $slow, sprintf 'answered in %.2f s', $res->{took});

my $wa = encode_json({ entry => [ { changes => [ { value => {
    metadata => { phone_number_id => '1' },
    messages => [ map { { from => "1555$_", id => "w$_" } } 1 .. 10000 ],
} } ] } ] });

$res = post('/wa', $wa);
is($res->{status}, 400, '10,000 WhatsApp senders: 400');
ok($res->{took} < 5 * $slow, sprintf 'answered in %.2f s', $res->{took});

my $ids = encode_json({ data => [ map { { from => 'one', id => "i$_" } }
                                  1 .. 5000 ] });

$res = post('/hook', $ids);
is($res->{status}, 400, '5,000 message ids of one sender: 400');
like(detail($res), qr/more than 1000 message ids/, 'more than 1000 ids');

sub nested {
    my ($depth) = @_;
    return '{"from":"d","x":' . ('[' x ($depth - 1)) . (']' x ($depth - 1))
           . '}';
}

for my $depth (65, 100_000, 1_000_000) {
    $res = post('/hook', nested($depth));

    is($res->{status}, 400, "nesting of $depth: 400");
    like(detail($res), qr/nesting deeper than 64/, 'deeper than 64');
    ok($res->{took} < 5 * $slow, sprintf 'answered in %.2f s', $res->{took});
}

is(redis_calls() - $calls, 1, 'Redis saw none of them (1: the INFO asking)');

$res = post('/hook', nested(64));
is($res->{status}, 200, 'nesting of 64 accepted');

# accepted with bounded work: each parsed in a fraction of a second (a
# hundredth of the size under a memory checker, whose mallocs are slow
# enough to stall the worker past the Redis timeout)

my $n = $slow > 1 ? 100 : 1;

sub bounded {
    my ($uri, $body, $name) = @_;

    my $res = post($uri, $body);

    is($res->{status}, 200, sprintf('%s: 200 in %.2f s', $name,
                                    $res->{took}));
    ok($res->{took} < 5 * $slow, "$name: bounded");
}

bounded('/hook', '{"from":"t","x":[' . join(',', (0) x (1_000_000 / $n))
                 . ']}', sprintf '%d tiny values', 1_000_000 / $n);

bounded('/wa', encode_json({ entry => [ { changes => [ { value => {
    metadata => { phone_number_id => '1' },
    contacts => [ map { { wa_id => "1555$_" } } 1 .. 50_000 / $n ],
    messages => [ { from => '155549999', id => 'crowd' } ],
} } ] } ] }), sprintf '%d contacts, one message', 50_000 / $n);

bounded('/hook', '{"from":"w",' . join(',', map { qq("k$_":0) }
                                            1 .. 200_000 / $n) . '}',
        sprintf 'an object of %d keys', 200_000 / $n);

$h->done;
