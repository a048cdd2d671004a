#!/usr/bin/perl

# Provider signatures (webhook_signature): for every format a correctly
# signed body passes untouched, and a wrong, missing or malformed
# signature, or one made with another secret, is answered 401 before the
# body is parsed, with nothing sent to Redis or to the upstream.  Secret
# rotation, secrets from variables, a body spooled to a temp file,
# Twilio's public URL, Messenger's SHA-1 header, and no secret in the
# debug log.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Digest::SHA qw(hmac_sha1_hex hmac_sha256_hex);
use NgxHarness;
use Provider;

my $h = NgxHarness->new(needs => [qw/proxy map redis debug/]);
my $redis = $h->redis;
my $up = $h->upstream;

# each secret is unique, so that the error log can be searched for it

my %secret = (
    server   => 'srv-secret-Kp44q',
    whatsapp => 'wa-app-secret-Zq81x',
    ig       => 'ig-app-secret-Lm35c',
    fb       => 'fb-app-secret-Qa91v',
    tiktok   => 'tt-client-secret-Hn50b',
    twilio   => 'tw-auth-token-Jr72n',
    old      => 'rot-old-secret-Ux19m',
    new      => 'rot-new-secret-Vy27k',
    map      => 'map-secret-Wd63j',
);

$h->start(<<"CONF");
webhook_redis 127.0.0.1:%%PORT_REDIS%%;

log_format sig '\$request_method \$uri \$status \$webhook_lock_status';

map \$http_x_tenant \$tenant_secret {
    acme     $secret{map};
    default  "";
}

server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    client_body_buffer_size 16k;
    client_max_body_size 4m;

    access_log %%TESTDIR%%/sig.log sig;

    # a fresh key per request: no request here waits for another's lock
    webhook_lock_key sig:\$request_id:\$webhook_sender;
    webhook_signature $secret{server};

    proxy_set_header X-Lock \$webhook_lock_status;

    location /wa {
        webhook_lock whatsapp;
        webhook_signature $secret{whatsapp};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /ig {
        webhook_lock instagram;
        webhook_signature $secret{ig};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /fb {
        webhook_lock messenger;
        webhook_signature $secret{fb};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /tt {
        webhook_lock tiktok;
        webhook_signature $secret{tiktok};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /sms {
        webhook_lock twilio;
        webhook_signature $secret{twilio};
        webhook_signature_url https://hooks.example.com/twilio/sms\$is_args\$args;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /sms-own {
        webhook_lock twilio;
        webhook_signature $secret{twilio};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /twilio-docs {
        webhook_lock twilio;
        webhook_signature 12345;
        webhook_signature_url "https://mycompany.com/myapp.php?foo=1&bar=2";
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /rotate {
        webhook_lock whatsapp;
        webhook_signature $secret{old} $secret{new};
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /map {
        webhook_lock whatsapp;
        webhook_signature \$tenant_secret;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /inherit {
        webhook_lock whatsapp;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /off {
        webhook_lock whatsapp;
        webhook_signature off;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }

    location /json {
        webhook_lock json;
        webhook_sender from;
        webhook_signature off;
        proxy_pass http://127.0.0.1:%%PORT_UPSTREAM%%;
    }
}
CONF

my $FORM = 'application/x-www-form-urlencoded';
my $DENIED = '{"error":"invalid_signature"}';

my $wa = $h->fixture('whatsapp_cloud-svc-text-phone-and-bsuid.json');
my $ig = $h->fixture('instagram-text.json');
my $fb = $h->fixture('messenger-text-DERIVED-http-envelope.json');
my $tt = $h->fixture('tiktok-im_receive_msg.json');
my $sms = $h->fixture('twilio-sms-new-conversation.form.txt');
$sms =~ s/\s+\z//;

sub meta256 { Provider::meta_signature($_[0], $_[1]) }
sub meta1   { Provider::meta_signature($_[0], $_[1], 1) }
sub tiktok  { Provider::tiktok_signature(@_) }
sub twilio  { Provider::twilio_signature(@_) }

# nginx writes the access log line after the response: note how many
# lines there were before each request, and wait for the next one

my $seen = 0;

sub log_lines {
    return split /\n/, $h->read_file('sig.log');
}

sub send_request {
    $seen = () = log_lines();
    return $h->request(@_);
}

sub post {
    my ($uri, $body, @headers) = @_;
    return send_request(POST => $uri, body => $body,
                        headers => [@headers]);
}

sub last_status {
    for (1 .. 100) {
        my @lines = log_lines();
        return $lines[-1] if @lines > $seen;
        select undef, undef, undef, 0.02;
    }

    return '';
}

sub redis_calls {
    my $info = $redis->cmd('INFO', 'commandstats');
    my $n = 0;
    $n += $1 while $info =~ /^cmdstat_\w+:calls=(\d+)/mg;
    return $n;
}

sub passes {
    my ($res, $body, $name, $lock) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($res->{status}, 200, "$name: 200")
        or diag $res->{body};

    my @reqs = $up->requests;
    is(scalar @reqs, 1, "$name: forwarded");
    ok(@reqs && $reqs[0]{body} eq $body, "$name: body byte-identical");
    is($reqs[0]{headers}{'x-lock'}, $lock // 'acquired',
       "$name: " . ($lock // 'acquired'))
        if @reqs;

    $up->clear;
}

sub denied {
    my ($res, $name) = @_;

    local $Test::Builder::Level = $Test::Builder::Level + 1;

    is($res->{status}, 401, "$name: 401");
    is($res->{headers}{'content-type'}, 'application/json',
       "$name: JSON answer");
    is($res->{body}, $DENIED, "$name: invalid_signature");
    like(last_status(), qr/^POST \S+ 401 unsigned$/, "$name: unsigned");
}

###############################################################################

# correctly signed bodies pass, for every format

passes(post('/wa', $wa, 'X-Hub-Signature-256' => meta256($wa,
                                                         $secret{whatsapp})),
       $wa, 'whatsapp signed');

passes(post('/wa', $wa, 'x-hub-signature-256' => uc(meta256($wa,
                                                          $secret{whatsapp}))),
       $wa, 'whatsapp, header name and hex in other case');

passes(post('/ig', $ig, 'X-Hub-Signature-256' => meta256($ig, $secret{ig})),
       $ig, 'instagram signed');

passes(post('/fb', $fb, 'X-Hub-Signature-256' => meta256($fb, $secret{fb})),
       $fb, 'messenger signed');

passes(post('/fb', $fb, 'X-Hub-Signature' => meta1($fb, $secret{fb})),
       $fb, 'messenger signed with SHA-1 only');

passes(post('/fb', $fb, 'X-Hub-Signature-256' => meta256($fb, $secret{fb}),
            'X-Hub-Signature' => 'sha1=' . ('0' x 40)),
       $fb, 'messenger: a good SHA-256 header decides');

passes(post('/tt', $tt, 'Tiktok-Signature' => tiktok($tt, $secret{tiktok})),
       $tt, 'tiktok signed');

my $t = time;
my $s = hmac_sha256_hex("$t.$tt", $secret{tiktok});

passes(post('/tt', $tt, 'Tiktok-Signature' => "s=$s, t=$t"),
       $tt, 'tiktok, elements swapped, a blank after the comma');

passes(post('/tt', $tt, 'Tiktok-Signature' => "t=$t,v0=abc,s=$s"),
       $tt, 'tiktok, an unknown element ignored');

# Twilio signs the public URL, not the one nginx sees

my $url = 'https://hooks.example.com/twilio/sms?x=1';

passes(post('/sms?x=1', $sms, 'Content-Type' => $FORM,
            'X-Twilio-Signature' => twilio($url, $sms, $secret{twilio})),
       $sms, 'twilio signed for webhook_signature_url');

passes(post('/sms-own?a=b', $sms, 'Content-Type' => $FORM,
            'X-Twilio-Signature' => twilio('http://localhost/sms-own?a=b',
                                           $sms, $secret{twilio})),
       $sms, 'twilio, default URL $scheme://$host$request_uri');

my $odd = 'To=%2B1234567890&Body=caf%C3%A9+%26+more&MediaUrl0=b&From=%2B1555'
          . '&MediaUrl0=a&AccountSid=ACxxx&MessageSid=SModd&MediaUrl0=b'
          . '&Empty=&Flag';

passes(post('/sms', $odd, 'Content-Type' => $FORM,
            'X-Twilio-Signature' => twilio('https://hooks.example.com/'
                                           . 'twilio/sms', $odd,
                                           $secret{twilio})),
       $odd, 'twilio: unsorted, escaped, repeated and empty fields');

# the example of Twilio's documentation, with its published signature

my $docs = 'CallSid=CA1234567890ABCDE&Caller=%2B14158675309&Digits=1234'
           . '&From=%2B14158675309&To=%2B18005551212';

passes(post('/twilio-docs', $docs, 'Content-Type' => $FORM,
            'X-Twilio-Signature' => 'RSOYDt4T1cUTdK1PDd93/VVr8B8='),
       $docs, "twilio: the documentation's example", 'bypass');

# rotation: any secret of the list

passes(post('/rotate', $wa, 'X-Hub-Signature-256' => meta256($wa,
                                                             $secret{new})),
       $wa, 'rotation: the second secret');

passes(post('/rotate', $wa, 'X-Hub-Signature-256' => meta256($wa,
                                                             $secret{old})),
       $wa, 'rotation: the first secret');

# secrets from variables, and inherited

passes(post('/map', $wa, 'X-Tenant' => 'acme',
            'X-Hub-Signature-256' => meta256($wa, $secret{map})),
       $wa, 'secret from a map');

passes(post('/inherit', $wa, 'X-Hub-Signature-256' => meta256($wa,
                                                             $secret{server})),
       $wa, 'secret inherited from the server');

passes(post('/off', $wa), $wa, 'webhook_signature off: no header needed');

passes(post('/json', '{"from":"x"}'), '{"from":"x"}',
       'json with webhook_signature off');

# a chunked body, and a 2 MB one spooled to a temp file

my $good_wa = meta256($wa, $secret{whatsapp});

my $res = send_request(POST => '/wa', body => $wa, chunked => 1,
                       chunk_size => 100, headers => [
                           'X-Hub-Signature-256' => $good_wa
                       ]);
passes($res, $wa, 'whatsapp, chunked');

my $big = $wa;
$big =~ s/^\s*\{/'{"padding":"' . ('z' x (2 << 20)) . '",'/e;

$res = send_request(POST => '/wa', body => $big, timeout => 30,
                    headers => [ 'X-Hub-Signature-256' =>
                                 meta256($big, $secret{whatsapp}) ]);
passes($res, $big, '2 MB body');

$h->error_log_like(qr/a client request body is buffered to a temporary/,
                   'the 2 MB body was in a temp file');

# the signature comes before parsing: a signed bad body is a 400

$res = post('/wa', '{"entry":', 'X-Hub-Signature-256' =>
            meta256('{"entry":', $secret{whatsapp}));
is($res->{status}, 400, 'signed malformed body: 400 after the signature');

is_deeply($redis->settled_keys, [], 'every lock was released');
$up->clear;

###############################################################################

# refused: 401, nothing parsed, nothing sent to Redis or the upstream

my $calls = redis_calls();
my $mark = $h->log_mark;

my $good = meta256($wa, $secret{whatsapp});
my $hex = substr($good, 7);

my @meta = (
    [ 'missing header',          [] ],
    [ 'wrong signature',         [ 'X-Hub-Signature-256' =>
                                   meta256($wa . ' ', $secret{whatsapp}) ] ],
    [ 'wrong secret',            [ 'X-Hub-Signature-256' =>
                                   meta256($wa, $secret{ig}) ] ],
    [ 'no prefix',               [ 'X-Hub-Signature-256' => $hex ] ],
    [ 'sha1 prefix',             [ 'X-Hub-Signature-256' => "sha1=$hex" ] ],
    [ 'prefix only',             [ 'X-Hub-Signature-256' => 'sha256=' ] ],
    [ 'empty header',            [ 'X-Hub-Signature-256' => '' ] ],
    [ 'one hex digit short',     [ 'X-Hub-Signature-256' =>
                                   substr($good, 0, -1) ] ],
    [ 'one hex digit more',      [ 'X-Hub-Signature-256' => $good . '0' ] ],
    [ 'not hex',                 [ 'X-Hub-Signature-256' =>
                                   substr($good, 0, -1) . 'g' ] ],
    [ 'SHA-1 only',              [ 'X-Hub-Signature' =>
                                   meta1($wa, $secret{whatsapp}) ] ],
    [ 'server secret, not own',  [ 'X-Hub-Signature-256' =>
                                   meta256($wa, $secret{server}) ] ],
);

for my $case (@meta) {
    my ($name, $headers) = @$case;
    denied(post('/wa', $wa, @$headers), "whatsapp $name");
}

denied(post('/wa', $wa . ' ', 'X-Hub-Signature-256' => $good),
       'whatsapp, body changed after signing');

denied(post('/wa', '{"entry":'), 'whatsapp, malformed body unsigned: 401');

denied(post('/ig', $ig, 'X-Hub-Signature' => meta1($ig, $secret{ig})),
       'instagram SHA-1 only');

denied(post('/ig', $ig, 'X-Hub-Signature-256' => meta256($ig, 'nope')),
       'instagram wrong secret');

denied(post('/fb', $fb, 'X-Hub-Signature-256' => meta256($fb, 'nope'),
            'X-Hub-Signature' => meta1($fb, $secret{fb})),
       'messenger: a bad SHA-256 header is not saved by a good SHA-1 one');

denied(post('/fb', $fb, 'X-Hub-Signature' => meta1($fb, 'nope')),
       'messenger wrong SHA-1');

denied(post('/fb', $fb, 'X-Hub-Signature' => 'sha256='
                                            . hmac_sha1_hex($fb, $secret{fb})),
       'messenger SHA-1 header with the wrong prefix');

denied(post('/fb', $fb), 'messenger missing header');

$s = hmac_sha256_hex("$t.$tt", $secret{tiktok});

my @tiktok = (
    [ 'missing header',       [] ],
    [ 'wrong secret',         [ 'Tiktok-Signature' => tiktok($tt, 'nope') ] ],
    [ 'other timestamp',      [ 'Tiktok-Signature' =>
                                't=' . ($t + 1) . ",s=$s" ] ],
    [ 'no t',                 [ 'Tiktok-Signature' => "s=$s" ] ],
    [ 'no s',                 [ 'Tiktok-Signature' => "t=$t" ] ],
    [ 'empty t',              [ 'Tiktok-Signature' => "t=,s=$s" ] ],
    [ 't not a number',       [ 'Tiktok-Signature' => "t=${t}x,s=$s" ] ],
    [ 's not hex',            [ 'Tiktok-Signature' =>
                                "t=$t,s=" . substr($s, 0, -1) . 'z' ] ],
    [ 's too short',          [ 'Tiktok-Signature' =>
                                "t=$t,s=" . substr($s, 0, -2) ] ],
    [ 't twice',              [ 'Tiktok-Signature' => "t=$t,t=$t,s=$s" ] ],
    [ 'bare hex',             [ 'Tiktok-Signature' => $s ] ],
    [ 'Meta header instead',  [ 'X-Hub-Signature-256' =>
                                meta256($tt, $secret{tiktok}) ] ],
);

for my $case (@tiktok) {
    my ($name, $headers) = @$case;
    denied(post('/tt', $tt, @$headers), "tiktok $name");
}

my $tw = twilio($url, $sms, $secret{twilio});

my @twilio = (
    [ 'missing header',       [] ],
    [ 'signed for the URL nginx sees',
                              [ 'X-Twilio-Signature' =>
                                twilio('http://localhost/sms?x=1', $sms,
                                       $secret{twilio}) ] ],
    [ 'wrong secret',         [ 'X-Twilio-Signature' =>
                                twilio($url, $sms, 'nope') ] ],
    [ 'no padding',           [ 'X-Twilio-Signature' =>
                                substr($tw, 0, -1) ] ],
    [ 'not base64',           [ 'X-Twilio-Signature' =>
                                '!' . substr($tw, 1) ] ],
    [ 'too long',             [ 'X-Twilio-Signature' => $tw . 'AAAA' ] ],
    [ 'hex, not base64',      [ 'X-Twilio-Signature' =>
                                hmac_sha1_hex($url . $sms,
                                              $secret{twilio}) ] ],
);

for my $case (@twilio) {
    my ($name, $headers) = @$case;
    denied(post('/sms?x=1', $sms, 'Content-Type' => $FORM, @$headers),
           "twilio $name");
}

denied(post('/sms?x=1', $sms . '&Extra=1', 'Content-Type' => $FORM,
            'X-Twilio-Signature' => $tw),
       'twilio, a field added after signing');

denied(post('/sms?x=1', 'From=%zz', 'Content-Type' => $FORM,
            'X-Twilio-Signature' => $tw),
       'twilio, malformed form body');

denied(post('/rotate', $wa, 'X-Hub-Signature-256' => meta256($wa, 'third')),
       'rotation: neither secret');

denied(post('/map', $wa, 'X-Tenant' => 'acme',
            'X-Hub-Signature-256' => meta256($wa, $secret{whatsapp})),
       'map secret, signed with another');

denied(post('/inherit', $wa, 'X-Hub-Signature-256' => meta256($wa, 'nope')),
       'inherited secret, wrong signature');

$res = send_request(POST => '/wa', body => $big, timeout => 30,
                    headers => [ 'X-Hub-Signature-256' =>
                                 meta256($big . 'x', $secret{whatsapp}) ]);
denied($res, '2 MB body, wrong signature');

# every secret evaluates to "": a configuration fault, not the client's

$res = post('/map', $wa, 'X-Tenant' => 'other',
            'X-Hub-Signature-256' => meta256($wa, ''));
is($res->{status}, 500, 'no non-empty secret: 500');

is(scalar $up->requests, 0, 'nothing refused reached the upstream');
is(redis_calls() - $calls, 1,
   'nothing refused sent Redis anything (1: the INFO asking)');

my $log = $h->error_log($mark);

my $mismatch = qr/\[info\].*webhook signature mismatch: /;

like($log, qr/$mismatch"X-Hub-Signature-256" header missing/,
     'missing header logged at info');
like($log, qr/$mismatch"X-Hub-Signature-256" header malformed/,
     'malformed header logged at info');
like($log, qr/$mismatch"Tiktok-Signature" header does not verify/,
     'mismatch logged at info');
my $public = qr{url "https://hooks\.example\.com/twilio/sms\?x=1"};

like($log, qr/$mismatch"X-Twilio-Signature" header does not verify, $public/,
     'twilio mismatch logged with the URL it used');
like($log, qr/$mismatch"X-Twilio-Signature" header cannot verify a malformed/,
     'twilio malformed body logged');
like($log, qr/\[error\].*webhook signature secrets are all empty/,
     'empty secrets logged as an error');

###############################################################################

# GET (Meta's verification handshake) needs no signature

$res = $h->request(GET => '/wa?hub.mode=subscribe&hub.challenge=42');
is($res->{status}, 200, 'GET passes without a signature');
$up->clear;

###############################################################################

# no secret, nor an expected signature, anywhere in the debug log

$log = $h->error_log;

like($log, qr/\[debug\]/, 'the error log has debug lines');

for my $name (sort keys %secret) {
    ok(index($log, $secret{$name}) < 0, "secret '$name' not in the log");
}

# the "other timestamp" case: what its header should have carried

my $expected = hmac_sha256_hex(($t + 1) . ".$tt", $secret{tiktok});
ok(index($log, $expected) < 0, 'an expected signature not in the log');

###############################################################################

# configuration

my $conf = <<'CONF';
webhook_redis 127.0.0.1:%%PORT_REDIS%%;
server {
    listen 127.0.0.1:%%PORT_NGINX%%;
    %%HERE%%
}
CONF

sub conf {
    my ($text) = @_;
    (my $c = $conf) =~ s/%%HERE%%/$text/;
    return $c;
}

$h->config_ok(conf(<<'CONF'), 'secrets as variables, url as a value');
location /a {
    webhook_lock twilio;
    webhook_signature $http_x_a "pre-$host" literal;
    webhook_signature_url https://$http_x_host/a$is_args$args;
}
CONF

$h->config_fails(conf(<<'CONF'),
webhook_signature inherited-secret;
location /j { webhook_lock json; webhook_sender from; }
CONF
                 qr/"webhook_lock json" has no signature scheme.*\.conf:\d+/,
                 'json with an inherited signature is refused');

$h->config_ok(conf(<<'CONF'), 'off in a json location');
webhook_signature inherited-secret;
location /j { webhook_lock json; webhook_sender from; webhook_signature off; }
location /o { webhook_lock off; }
CONF

$h->config_fails(conf('location /a { webhook_signature ""; }'),
                 qr/"webhook_signature" directive has an empty secret/,
                 'empty secret refused');

$h->config_fails(conf('location /a { webhook_signature a off; }'),
                 qr/"webhook_signature" directive has "off" among secrets/,
                 'off among secrets refused');

my $out = $h->config_fails(conf('location /a { webhook_signature s3cr3t-x; '
                                . 'webhook_signature s3cr3t-y; }'),
                           qr/"webhook_signature" directive is duplicate/,
                           'webhook_signature twice');
unlike($out, qr/s3cr3t/, 'the error does not echo a secret');

$h->config_fails(conf('location /a { webhook_signature_url a; '
                      . 'webhook_signature_url b; }'),
                 qr/"webhook_signature_url" directive is duplicate/,
                 'webhook_signature_url twice');

$h->done;
