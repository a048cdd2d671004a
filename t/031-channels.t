#!/usr/bin/perl

# The telegram, line and sms formats rule by rule: which update or event
# locks and by whom, which id, which inbox (for Telegram the URI with the
# bot token hashed), what bypasses, the shapes each refuses, and a LINE
# body of several users taking all of their locks or none.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Digest::SHA qw/sha256_hex/;
use NgxHarness;

my $h = NgxHarness->new(needs => [qw/proxy redis/]);
my $redis = $h->redis;
my $up = $h->upstream;

my $headers = <<'CONF';
        proxy_set_header X-Inbox $webhook_inbox;
        proxy_set_header X-Senders $webhook_senders;
        proxy_set_header X-Ids $webhook_message_ids;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_set_header X-Key $webhook_lock_key;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
CONF

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format inbox '\$status \$webhook_lock_status \$webhook_inbox';

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /telegram/ {
        webhook_lock telegram;
        access_log %%TESTDIR%%/telegram.log inbox;
        $headers
    }
    location /line/ { webhook_lock line; $headers }
    location /sms/ { webhook_lock sms; $headers }

    location /telegram-dedup/ {
        webhook_lock telegram;
        webhook_dedup 1h;
        $headers
    }

    location /telegram-inbox/ {
        webhook_lock telegram;
        webhook_inbox message.chat.id;
        $headers
    }
}
CONF

sub send_body {
    my ($uri, $body, $type) = @_;

    $up->clear;
    my $res = $h->request(POST => $uri, body => ref $body
                                              ? encode_json($body) : $body,
                          headers => { 'Content-Type' =>
                                       $type // 'application/json' });
    my ($req) = $up->requests;
    return ($res, $req ? $req->{headers} : {});
}

sub extracts {
    my ($uri, $body, $want, $name) = @_;

    my ($res, $hd) = send_body($uri, $body);

    is($res->{status}, 200, "$name: forwarded") or diag $res->{body};
    for my $k (sort keys %$want) {
        is($hd->{"x-$k"}, $want->{$k}, "$name: $k");
    }
}

sub refuses {
    my ($uri, $body, $detail, $name) = @_;

    my ($res) = send_body($uri, $body);
    is($res->{status}, 400, "$name: 400");
    like((eval { decode_json($res->{body}) } // {})->{detail} // '',
         $detail, "$name: detail");
    is(scalar $up->requests, 0, "$name: not forwarded");
}

###############################################################################

# telegram

my $token = '123456789:AAE-secret_bot_token';
my $tg = "/telegram/$token";
my $tg_inbox = '/telegram/sha256-' . substr(sha256_hex($token), 0, 32);

my $user = { id => 23, is_bot => JSON::PP::false, first_name => 'Sojan' };
my $bot = { id => 777, is_bot => JSON::PP::true, first_name => 'Bot' };
my $chat = { id => 23, type => 'private' };

extracts($tg, { update_id => 2342342343242,
                message => { message_id => 1, from => $user, chat => $chat,
                             date => 1631132077, text => 'hi' } },
         { senders => '23', ids => '2342342343242', inbox => $tg_inbox,
           key => "webhook:{$tg_inbox}:23", lock => 'acquired' },
         'telegram message: from.id, update_id, the token hashed');

extracts($tg, { update_id => 10,
                callback_query => { id => 'cb1', data => 'yes',
                                    from => $user,
                                    message => { message_id => 5,
                                                 from => $bot,
                                                 chat => $chat } } },
         { senders => '23', ids => '10' },
         'telegram callback query: the user who pressed, not the bot');

extracts($tg, { update_id => 11,
                message => { message_id => 6, from => { id => 99 },
                             chat => $chat },
                callback_query => { id => 'cb2', from => $user } },
         { senders => '23' }, 'telegram: callback_query before message');

for my $kind (qw/edited_message business_message edited_business_message/) {
    extracts($tg, { update_id => 12,
                    $kind => { message_id => 7, from => { id => 4242 },
                               chat => $chat, text => 'x',
                               business_connection_id => 'bc1' } },
             { senders => '4242', ids => '12', lock => 'acquired' },
             "telegram $kind: from.id");
}

extracts($tg, { update_id => 13,
                my_chat_member => { from => $user, chat => $chat,
                                    date => 1,
                                    old_chat_member => { status => 'member' },
                                    new_chat_member =>
                                        { status => 'kicked' } } },
         { lock => 'bypass', senders => undef, ids => undef,
           inbox => $tg_inbox },
         'telegram my_chat_member bypasses though it has a from');

for my $update (
    { chat_member => { from => $user, chat => $chat } },
    { poll => { id => 'p1', question => 'q?' } },
    { message_reaction => { chat => $chat, message_id => 5,
                            user => { id => 23 } } },
    { channel_post => { message_id => 8, chat => { id => -100, type =>
                                                   'channel' },
                        sender_chat => { id => -100 } } },
    { message => { message_id => 9, chat => $chat,
                   sender_chat => { id => -100 } } },
    {})
{
    my ($kind) = keys %$update;
    extracts($tg, { update_id => 14, %$update },
             { lock => 'bypass', senders => undef },
             'telegram ' . ($kind // 'update_id alone') . ': bypass');
}

extracts('/telegram-inbox/x', { update_id => 15,
                                message => { from => $user,
                                             chat => { id => -55 } } },
         { inbox => '-55', key => 'webhook:{-55}:23' },
         'telegram: webhook_inbox overrides the hashed URI');

refuses($tg, [ { update_id => 1 } ], qr/not an object/,
        'telegram top-level array');
refuses($tg, '"update"', qr/not an object/, 'telegram top-level string');
refuses($tg, { update_id => 1, message => 'hello' },
        qr/message is not an object/, 'telegram message not an object');
refuses($tg, { update_id => 1, callback_query => [ $user ] },
        qr/callback_query is not an object/,
        'telegram callback_query not an object');

my ($res) = send_body($tg, 'update_id=1', 'application/x-www-form-urlencoded');
is($res->{status}, 415, 'telegram: a form body is 415');

# $webhook_inbox hashes the token whatever the answer: 200, 400 or 415

my @lines;
my $deadline = time + 5;

while (1) {
    @lines = split /\n/, $h->read_file('telegram.log');
    last if grep({ /^415 / } @lines) || time > $deadline;
    select undef, undef, undef, 0.02;
}

for my $status (qw/200 400 415/) {
    is_deeply([ map { (split / /)[2] } grep { /^$status / } @lines ],
              [ ($tg_inbox) x grep({ /^$status / } @lines) ],
              "telegram: \$webhook_inbox hashed in every $status line");
    ok(scalar(grep { /^$status / } @lines), "telegram: $status logged");
}

is(scalar(grep { index($_, 'secret_bot_token') >= 0 } @lines), 0,
   'telegram: the token in no log line');

# the dedup mark names the hashed inbox too

my $dedup_inbox = '/telegram-dedup/sha256-'
                  . substr(sha256_hex($token), 0, 32);

extracts("/telegram-dedup/$token",
         { update_id => 16, message => { from => $user, chat => $chat } },
         { inbox => $dedup_inbox }, 'telegram with dedup');

my $marks = $redis->cmd('KEYS', 'webhook:dedup:*');
is_deeply($marks, [ "webhook:dedup:{$dedup_inbox}:16" ],
          'telegram: the dedup mark has the hash');
ok(!grep({ index($_, 'secret_bot_token') >= 0 }
         @{ $redis->cmd('KEYS', '*') }),
   'telegram: no key holds the bot token');

($res) = send_body("/telegram-dedup/$token",
                   { update_id => 16, message => { from => $user,
                                                   chat => $chat } });
like($res->{body}, qr/duplicate/, 'telegram: a redelivered update_id');

$redis->cmd('DEL', @$marks);

###############################################################################

# line

my $line = {
    destination => 'U0bot',
    events => [
        { type => 'message', mode => 'active', timestamp => 1,
          webhookEventId => '01FZ74A0TDDPYRVKNK77XKC3ZR',
          deliveryContext => { isRedelivery => JSON::PP::false },
          source => { type => 'user', userId => 'U4af498' },
          replyToken => 'r1',
          message => { id => '325708', type => 'text', text => 'Hello' } },
        { type => 'follow', mode => 'active', timestamp => 1,
          webhookEventId => '01FZ74A0TDDPYRVKNK77XKC3ZS',
          source => { type => 'user', userId => 'Ufollow' } },
        { type => 'message', mode => 'active', timestamp => 2,
          webhookEventId => '01FZ74A0TDDPYRVKNK77XKC3ZT',
          source => { type => 'group', groupId => 'Cg1',
                      userId => 'Ubbb' },
          message => { id => '325709', type => 'image' } },
        { type => 'postback', timestamp => 3,
          source => { type => 'user', userId => 'Upostback' },
          postback => { data => 'x' } },
    ],
};

extracts('/line/1657', $line,
         { inbox => 'U0bot', senders => 'U4af498,Ubbb', lock => 'acquired',
           ids => '01FZ74A0TDDPYRVKNK77XKC3ZR,01FZ74A0TDDPYRVKNK77XKC3ZT',
           key => 'webhook:{U0bot}:U4af498,webhook:{U0bot}:Ubbb' },
         'line: every message event, follow and postback skipped');

extracts('/line/1657', { destination => 'U0bot', events => [
             { type => 'message', source => { userId => 'Ux' },
               message => { id => '325710', type => 'text' } },
             { type => 'message', source => { userId => 'Ux' },
               webhookEventId => '', message => { id => 325711 } } ] },
         { senders => 'Ux', ids => '325710,325711' },
         'line: message.id when there is no webhookEventId');

extracts('/line/1657', { destination => 'U0bot', events => [] },
         { lock => 'bypass', senders => undef, inbox => 'U0bot' },
         'line: the verify call ("events":[]) bypasses');

extracts('/line/1657', { destination => 'U0bot', events => [
             { type => 'unfollow', source => { userId => 'Uz' } },
             { type => 'message', source => { type => 'group',
                                              groupId => 'Cg2' },
               message => { id => '1' } } ] },
         { lock => 'bypass', senders => undef },
         'line: no user to lock: bypass');

extracts('/line/1657', { events => [ { type => 'message',
                                       source => { userId => 'Uy' } } ] },
         { senders => 'Uy', inbox => '/line/1657' },
         'line: no destination, the URI is the inbox');

refuses('/line/1657', [ $line ], qr/not an object/, 'line top-level array');
refuses('/line/1657', { destination => 'U0bot', events => {} },
        qr/events is not an array/, 'line events not an array');
refuses('/line/1657', { destination => 'U0bot', events => [ 'message' ] },
        qr/events element is not an object/, 'line event not an object');
refuses('/line/1657', { destination => 'U0bot', events => [
            { type => [ 'message' ], source => { userId => 'U1' } } ] },
        qr/type is not a string/, 'line event type not a string');

# several users: all their locks or none

$redis->cmd('SET', 'webhook:{U0bot}:Ubbb', 'someone-else', 'PX', 5000);

($res) = send_body('/line/1657', $line);
is($res->{status}, 503, 'line: one of two users busy: 503');
is($redis->cmd('EXISTS', 'webhook:{U0bot}:U4af498'), 0,
   'line: the free user was not locked (no partial hold)');
is($redis->cmd('GET', 'webhook:{U0bot}:Ubbb'), 'someone-else',
   'line: the held lock was left alone');

$redis->cmd('DEL', 'webhook:{U0bot}:Ubbb');

###############################################################################

# sms (Bandwidth)

my $received = {
    time => '2022-02-02T23:14:05.309Z', type => 'message-received',
    to => '+12345678911', description => 'Incoming message received',
    message => { id => '3232420-2323-234324', owner => '+12345678911',
                 direction => 'in', to => [ '+12345678911' ],
                 from => '+14234234234', text => 'test message' },
};

sub status_event {
    my ($type) = @_;
    return { time => '2022-02-02T23:14:05.309Z', type => $type,
             to => '+12345678911', description => 'ok',
             message => { id => 'SMd560', from => '+12345678911',
                          to => [ '+14234234234' ] } };
}

extracts('/sms/+12345678911', [ $received ],
         { inbox => '+12345678911', senders => '+14234234234',
           ids => '3232420-2323-234324', lock => 'acquired',
           key => 'webhook:{+12345678911}:+14234234234' },
         'sms message-received');

for my $type (qw/message-delivered message-failed message-sending/) {
    extracts('/sms/+12345678911', [ status_event($type) ],
             { lock => 'bypass', senders => undef },
             "sms $type bypasses");
}

extracts('/sms/+12345678911',
         [ status_event('message-delivered'), $received ],
         { lock => 'bypass', senders => undef },
         'sms: only the first event counts, as in Chatwoot');

extracts('/sms/+12345678911',
         [ $received, { %$received, message => { %{ $received->{message} },
                                                 from => '+19999' } } ],
         { senders => '+14234234234' }, 'sms: the second event ignored');

extracts('/sms/+12345678911', [],
         { lock => 'bypass', senders => undef }, 'sms: an empty array');

extracts('/sms/+12345678911', [ { %$received, to => undef } ],
         { inbox => '/sms/+12345678911', senders => '+14234234234' },
         'sms: no "to", the URI is the inbox');

refuses('/sms/+12345678911', $received, qr/not an array/,
        'sms top-level object');
refuses('/sms/+12345678911', [ $received, 'x' ], qr/event is not an object/,
        'sms event not an object');
refuses('/sms/+12345678911', [ { %$received, type => 1 } ],
        qr/type is not a string/, 'sms event type not a string');

is_deeply($redis->settled_keys, [], 'every lock released');

$h->done;
