package Provider;

# (C) The webhook_lock authors

=head1 NAME

Provider - a messaging provider delivering bursts of webhooks, for tests

=head1 SYNOPSIS

    use Provider;

    my @hooks = map {
        { tag => "c$_", body => Provider::whatsapp_body(from => "1555$_",
                                                        id => "wamid.$_") }
    } 1 .. 6;

    my $burst = Provider->send($h, \@hooks, uri => '/webhooks/whatsapp/1',
                               ports => [ $h->port('nginx') ],
                               retry_cap => 1, deadline => 40);
    ...                                   # restart Redis, reload nginx
    my $results = $burst->wait;           # [ { tag, ok, attempts => [...] } ]
    my %status = Provider::statuses($results);

=head1 DESCRIPTION

Every webhook of a burst is posted at the same moment, each from its own
process, as providers do with the images of an album. Anything but a 2xx
(or no answer at all) is delivered again, as Meta and Twilio do, after
C<Retry-After> seconds capped at C<retry_cap> (1) plus a random jitter of
up to C<jitter> seconds (0.5), or after C<jitter> when there was no
answer; until a 2xx or C<deadline> seconds (40) after the start.

C<ports> (array ref of numbers) spreads the attempts over several nginx
nodes, round robin from a different node for each webhook. C<headers>
are sent with every attempt (C<Content-Type: application/json> unless
given). C<at> is the absolute time to start at (now + 0.2 s).

C<wait> returns, in the order of the burst, C<< { tag, ok, attempts =>
[ { t, done, port, status, error, retry_after, headers } ] } >>: C<t>
when the attempt was sent, C<done> when it was answered, C<status> 0 when
no answer came, C<error> the C<error> member of a JSON answer
(C<sender_busy>, C<lock_unavailable>...) or the client's error,
C<headers> the answer's (lower-case names). C<statuses($results)>
counts attempts by "STATUS ERROR".

C<< Provider->album($h, $prefix, $contacts, %opts) >> sends the WhatsApp
Cloud API album of the chaos tests: six images from each of
C<$contacts> senders (C<PREFIX0001>...), to
C</webhooks/whatsapp/12345678911>, redelivered after at most 1 s plus
0.5 s of jitter, for 60 s times the harness's slowness; C<%opts> go to
C<send>.

=head2 Signatures

As the providers sign their webhooks:
C<twilio_signature($url, $body, $token)> (X-Twilio-Signature: the URL,
then each field's name and distinct values, sorted, HMAC-SHA1, base64),
C<meta_signature($body, $secret, $sha)> (X-Hub-Signature-256, or with
C<$sha> 1 X-Hub-Signature: C<sha256=hex>), C<tiktok_signature($body,
$secret, $t)> (Tiktok-Signature: C<t=TIME,s=hex>; C<$t> defaults to now),
C<line_signature($body, $secret)> (X-Line-Signature: HMAC-SHA256, base64).

=cut

use strict;
use warnings;

use Digest::SHA qw(hmac_sha1 hmac_sha1_hex hmac_sha256 hmac_sha256_hex);
use JSON::PP ();
use MIME::Base64 qw(encode_base64);
use POSIX ();
use Time::HiRes qw(time sleep);

my $SEQ = 0;

sub whatsapp_body {
    my (%o) = @_;

    return JSON::PP::encode_json({
        object => 'whatsapp_business_account',
        entry => [{ id => '102290129340398', changes => [{
            field => 'messages',
            value => {
                messaging_product => 'whatsapp',
                metadata => { display_phone_number => '12345678911',
                              phone_number_id => $o{inbox} // '123456789' },
                contacts => [{ wa_id => $o{from},
                               profile => { name => "Contact $o{from}" } }],
                messages => [{ from => $o{from}, id => $o{id},
                               timestamp => int(time), type => 'image',
                               image => { id => "media-$o{id}",
                                          mime_type => 'image/jpeg' } }],
            },
        }] }],
    });
}

sub twilio_signature {
    my ($url, $body, $token) = @_;

    my %fields;

    for my $pair (grep { length } split /&/, $body) {
        my ($k, $v) = map {
            (my $s = $_) =~ tr/+/ /;
            $s =~ s/%([0-9A-Fa-f]{2})/chr hex $1/ge;
            $s;
        } split(/=/, $pair, 2), '';

        $fields{$k}{$v} = 1;
    }

    my $data = $url;

    for my $k (sort keys %fields) {
        $data .= $k . $_ for sort keys %{ $fields{$k} };
    }

    return encode_base64(hmac_sha1($data, $token), '');
}

sub meta_signature {
    my ($body, $secret, $sha) = @_;

    return ($sha // 256) == 1 ? 'sha1=' . hmac_sha1_hex($body, $secret)
                              : 'sha256=' . hmac_sha256_hex($body, $secret);
}

sub line_signature {
    my ($body, $secret) = @_;

    return encode_base64(hmac_sha256($body, $secret), '');
}

sub tiktok_signature {
    my ($body, $secret, $t) = @_;

    $t //= int time;

    return "t=$t,s=" . hmac_sha256_hex("$t.$body", $secret);
}

sub album {
    my ($class, $h, $prefix, $contacts, %opts) = @_;

    my @hooks;

    for my $c (1 .. $contacts) {
        my $from = sprintf '%s%04d', $prefix, $c;

        push @hooks, map {
            { tag => "$from.$_",
              body => whatsapp_body(from => $from, id => "wamid.$from.$_") }
        } 1 .. 6;
    }

    return $class->send($h, \@hooks, uri => '/webhooks/whatsapp/12345678911',
                        retry_cap => 1, jitter => 0.5,
                        deadline => 60 * $h->slowness, %opts);
}

sub send {
    my ($class, $h, $hooks, %opts) = @_;

    my $self = bless {
        h     => $h,
        kids  => [],
        files => [],
    }, $class;

    my $at = $opts{at} // time + 0.2;
    my $ports = $opts{ports} || [ $h->port('nginx') ];
    my $n = 0;

    for my $hook (@$hooks) {
        my $file = $h->testdir . "/provider-$$-" . ++$SEQ . '.json';
        my $first = $n++;

        # the harness's fork: the child dies with the test

        my $pid = $h->_fork;

        if ($pid == 0) {
            my $res = eval {
                _deliver($h, $hook, $at, $ports, $first, %opts)
            } // { tag => $hook->{tag}, ok => 0, attempts => [],
                   died => "$@" };

            open my $fh, '>', "$file.tmp" or POSIX::_exit(1);
            print $fh JSON::PP::encode_json($res);
            close $fh;
            rename "$file.tmp", $file;

            POSIX::_exit(0);
        }

        push @{ $self->{kids} }, $pid;
        push @{ $self->{files} }, $file;
    }

    return $self;
}

sub _deliver {
    my ($h, $hook, $at, $ports, $first, %opts) = @_;

    my $cap = $opts{retry_cap} // 1;
    my $jitter = $opts{jitter} // 0.5;
    my $deadline = $at + ($opts{deadline} // 40);
    my %headers = ('Content-Type' => 'application/json',
                   %{ $opts{headers} || {} });

    my @attempts;
    my $k = 0;

    sleep($at - time) if $at > time;

    while (time < $deadline) {
        my $port = $ports->[($first + $k++) % @$ports];

        my $t = time;
        my $res = $h->request(POST => $hook->{uri} // $opts{uri},
                              port => $port, body => $hook->{body},
                              headers => \%headers, timeout => 10);

        my $status = $res->{status} // 0;
        my $error = $res->{error};

        if (!$error && ($res->{body} // '') =~ /"error":"(\w+)"/) {
            $error = $1;
        }

        push @attempts, { t => $t, done => time, port => $port,
                          status => $status, error => $error // '',
                          retry_after => $res->{headers}{'retry-after'},
                          headers => $res->{headers} || {} };

        return { tag => $hook->{tag}, ok => 1, attempts => \@attempts }
            if $status >= 200 && $status < 300;

        my $retry = $res->{headers}{'retry-after'};
        my $pause = defined $retry && $retry =~ /^\d+\z/
                    ? ($retry < $cap ? $retry : $cap) : 0;

        sleep($pause + rand($jitter));
    }

    return { tag => $hook->{tag}, ok => 0, attempts => \@attempts };
}

sub wait {
    my ($self) = @_;

    my @results;

    for my $i (0 .. $#{ $self->{kids} }) {
        waitpid $self->{kids}[$i], 0;

        my $file = $self->{files}[$i];
        my $json = do { local (@ARGV, $/) = ($file); -f $file ? <> : undef };

        push @results, defined $json ? JSON::PP::decode_json($json)
                                     : { ok => 0, attempts => [],
                                         died => 'no result' };
    }

    $self->{kids} = [];

    return \@results;
}

sub statuses {
    my ($results) = @_;

    my %count;

    for my $r (@$results) {
        $count{ join ' ', $_->{status}, $_->{error} || () }++
            for @{ $r->{attempts} };
    }

    return %count;
}

sub DESTROY {
    my ($self) = @_;

    kill 'KILL', @{ $self->{kids} } if @{ $self->{kids} || [] };
}

1;
