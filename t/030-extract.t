#!/usr/bin/perl

# Extraction beyond the fixtures: several senders in one body for each
# format, the PATH language of the json format (top-level arrays, [*], [N],
# ordered fallbacks, numbers), paths that override a format's own rules,
# and the shapes each format refuses.

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
        proxy_set_header X-Inbox $webhook_inbox;
        proxy_set_header X-Senders $webhook_senders;
        proxy_set_header X-Sender $webhook_sender;
        proxy_set_header X-Id $webhook_message_id;
        proxy_set_header X-Ids $webhook_message_ids;
        proxy_set_header X-Lock $webhook_lock_status;
        proxy_set_header X-Key $webhook_lock_key;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
CONF

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

server {
    listen 127.0.0.1:%%PORT_NGINX%%;

    location /whatsapp { webhook_lock whatsapp; $headers }
    location /instagram { webhook_lock instagram; $headers }
    location /messenger { webhook_lock messenger; $headers }
    location /tiktok { webhook_lock tiktok; $headers }
    location /twilio { webhook_lock twilio; $headers }

    location /array {
        webhook_lock json;
        webhook_sender [*].message.from;
        webhook_message_id [*].message.id;
        webhook_inbox [0].account;
        $headers
    }

    location /fallback {
        webhook_lock json;
        webhook_sender data.contact.id data.from;
        webhook_message_id data.items[1].id;
        $headers
    }

    location /override {
        webhook_lock whatsapp;
        webhook_sender entry[*].changes[*].value.contacts[*].wa_id;
        webhook_lock_key wa:\$webhook_sender;
        $headers
    }

    location /twilio-custom {
        webhook_lock twilio;
        webhook_sender To;
        webhook_inbox AccountSid;
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
    my ($uri, $body, $want, $name, $type) = @_;

    my ($res, $hd) = send_body($uri, $body, $type);

    is($res->{status}, 200, "$name: forwarded") or diag $res->{body};
    for my $k (sort keys %$want) {
        is($hd->{"x-$k"}, $want->{$k}, "$name: $k");
    }
}

sub refuses {
    my ($uri, $body, $detail, $name, $type) = @_;

    my ($res) = send_body($uri, $body, $type);
    is($res->{status}, 400, "$name: 400");
    like((eval { decode_json($res->{body}) } // {})->{detail} // '',
         $detail, "$name: detail");
}

###############################################################################

# whatsapp: an album batch from two contacts, an echo and a status

my $wa = {
    object => 'whatsapp_business_account',
    entry => [{ id => 'W', changes => [{ field => 'messages', value => {
        metadata => { phone_number_id => 'PN1' },
        contacts => [ { wa_id => '111', profile => { name => 'A' } },
                      { wa_id => '222', user_id => 'IN.222' } ],
        messages => [ { from => '111', id => 'wamid.1', type => 'image' },
                      { from => '222', id => 'wamid.2', type => 'image' },
                      { from => '111', id => 'wamid.3', type => 'image' } ],
        statuses => [ { id => 'wamid.0', status => 'read' } ],
    } }] }],
};

extracts('/whatsapp/x', $wa, {
    inbox => 'PN1', senders => '111,IN.222', sender => '111',
    id => 'wamid.1', ids => 'wamid.1,wamid.2,wamid.3', lock => 'acquired',
    key => 'webhook:{PN1}:111,webhook:{PN1}:IN.222',
}, 'whatsapp batch with two contacts');

extracts('/whatsapp/x', {
    entry => [{ changes => [{ value => {
        metadata => { phone_number_id => 'PN1' },
        message_echoes => [ { from => 'PN1', to => '333', id => 'e.1' } ],
    } }] }],
}, { senders => '333', ids => 'e.1' }, 'whatsapp echo keyed by the contact');

extracts('/whatsapp/x', {
    entry => [{ changes => [{ value => {
        metadata => { phone_number_id => 'PN1' },
        statuses => [ { id => 'wamid.0', recipient_id => '111' } ],
    } }] }],
}, { lock => 'bypass', senders => undef, inbox => 'PN1' },
   'whatsapp status-only body bypasses');

extracts('/whatsapp/x', { messages => [ { from => 444, id => 'n' } ] },
         { senders => '444', inbox => '/whatsapp/x' },
         'a number as the sender; no inbox: $uri');

refuses('/whatsapp/x', { entry => 'nope' }, qr/entry/,
        'whatsapp entry not an array');

# instagram and messenger: several events, echoes, reads

my $ig = { object => 'instagram', entry => [
    { id => 'IG1', time => 1, messaging => [
        { sender => { id => 'u1' }, recipient => { id => 'IG1' },
          message => { mid => 'mid.1', text => 'hi' } },
        { sender => { id => 'IG1' }, recipient => { id => 'u2' },
          message => { mid => 'mid.2', is_echo => JSON::PP::true } },
        { sender => { id => 'u3' }, recipient => { id => 'IG1' },
          read => { mid => 'mid.0' } } ] } ] };

extracts('/instagram', $ig, { inbox => 'IG1', senders => 'u1,u2',
                              ids => 'mid.1,mid.2' },
         'instagram: message and echo, the read skipped');

my $fb = { object => 'page', entry => [
    { id => 'PAGE', messaging => [
        { sender => { id => 'p1' }, recipient => { id => 'PAGE' },
          reaction => { mid => 'mid.9', action => 'react' } },
        { sender => { id => 'p2' }, recipient => { id => 'PAGE' },
          postback => { title => 'Start', payload => 'GET_STARTED' } } ] },
    { id => 'PAGE', messaging => [
        { sender => { id => 'p3' }, recipient => { id => 'PAGE' },
          delivery => { mids => [ 'mid.7' ] } } ] } ] };

extracts('/messenger', $fb, { inbox => 'PAGE', senders => 'p1,p2' },
         'messenger: reaction and postback lock, delivery does not');

# tiktok: the content is JSON inside a string

extracts('/tiktok', { event => 'im_receive_msg', user_openid => 'biz-9',
                      content => encode_json({ conversation_id => 'conv-9',
                                               message_id => 'tm-1' }) },
         { inbox => 'biz-9', senders => 'conv-9', ids => 'tm-1' },
         'tiktok content parsed');

refuses('/tiktok', { event => 'im_receive_msg', user_openid => 'b',
                     content => '{"conversation_id":' }, qr/./,
        'tiktok content not JSON');

# twilio: messaging service, media only, status callback

my $form = 'application/x-www-form-urlencoded';

extracts('/twilio', 'MessagingServiceSid=MG1&AccountSid=AC1&To=%2B100'
                    . '&From=%2B200&Body=hello+there&MessageSid=SM1',
         { inbox => 'MG1', senders => '+200', ids => 'SM1' },
         'twilio: the messaging service is the inbox', $form);

extracts('/twilio', 'AccountSid=AC1&To=%2B100&From=%2B200&NumMedia=1'
                    . '&MediaUrl0=https%3A%2F%2Fx%2F1.jpg&SmsSid=SM2',
         { inbox => 'AC1:+100', senders => '+200', ids => 'SM2' },
         'twilio: media without a body locks', $form);

extracts('/twilio', 'AccountSid=AC1&To=%2B100&From=%2B200&MessageSid=SM3'
                    . '&MessageStatus=delivered',
         { lock => 'bypass', senders => undef },
         'twilio: a status callback bypasses', $form);

###############################################################################

# json: a top-level array, fallbacks, an index

extracts('/array', [ { account => 'acc', message => { from => 'x1',
                                                      id => 'i1' } },
                     { message => { from => 'x2', id => 'i2' } },
                     { message => { from => 'x1', id => 'i3' } } ],
         { inbox => 'acc', senders => 'x1,x2', ids => 'i1,i2,i3' },
         'top-level array with [*] and [0]');


extracts('/fallback', { data => { from => 'f1', contact => { id => '' },
                                  items => [ { id => 'a' }, { id => 'b' } ] } },
         { senders => 'f1', ids => 'b' },
         'an empty first path falls back to the next; [1] picks one');

extracts('/fallback', { data => { from => 'f1', contact => { id => 'c1' } } },
         { senders => 'c1', ids => undef },
         'the first path with a value wins');

extracts('/fallback', { data => { contact => { id => undef },
                                  from => JSON::PP::true } },
         { lock => 'bypass', senders => undef },
         'null and booleans are not senders');

# overrides of a format's own rules

extracts('/override', $wa, { senders => '111,222',
                             key => 'wa:111,wa:222' },
         'webhook_sender replaces the whatsapp rule; custom key');

extracts('/twilio-custom', 'AccountSid=AC7&To=%2B100&From=%2B200&Body=x',
         { inbox => 'AC7', senders => '+100' },
         'twilio field names as paths', $form);

is_deeply($redis->settled_keys, [], 'every lock released');

$h->done;
