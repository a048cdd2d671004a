#!/usr/bin/perl

# ./build.sh install, under a DESTDIR: the module, the load file and the
# modules-enabled link are where Debian's libnginx-mod-* packages put
# theirs, and nginx loads the module through them.  The module installed
# is the one under test (MODULE_SO), for the nginx under test.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use NgxHarness;

my $h = NgxHarness->new();
my $root = $h->testdir . '/root';
my $repo = "$FindBin::Bin/..";

my $module = $h->module;
my $out = `DESTDIR=$root MODULE_SO=$module $repo/build.sh install 2>&1`;
is($?, 0, 'install ran') or diag $out;

my $so = "$root/usr/lib/nginx/modules/ngx_http_webhook_lock_module.so";
my $load = "$root/usr/share/nginx/modules-available/"
           . "mod-http-webhook-lock.conf";
my $link = "$root/etc/nginx/modules-enabled/50-mod-http-webhook-lock.conf";

ok(-f $so, 'module in /usr/lib/nginx/modules');
is($h->read_file('root/usr/share/nginx/modules-available/'
                 . 'mod-http-webhook-lock.conf'),
   "load_module modules/ngx_http_webhook_lock_module.so;\n",
   'load file in modules-available');
is(readlink($link),
   '/usr/share/nginx/modules-available/mod-http-webhook-lock.conf',
   'enabled by a link in modules-enabled, as Debian does');

# nginx's prefix holds modules -> /usr/lib/nginx/modules, as on Debian

mkdir "$root/usr/share/nginx/conf";
symlink("$root/usr/lib/nginx/modules", "$root/usr/share/nginx/modules")
    or die "symlink: $!";

$h->write_file('root/usr/share/nginx/conf/nginx.conf', <<"CONF");
include $load;
pid $root/nginx.pid;
error_log $root/error.log;
events {}
http {
    access_log $root/access.log;
    webhook_redis 127.0.0.1:6379;
    server {
        location /hook {
            webhook_lock whatsapp;
            proxy_pass http://127.0.0.1:1;
        }
    }
}
CONF

my $rc;
($out, $rc) = $h->run_nginx('-p', "$root/usr/share/nginx/",
                            '-c', 'conf/nginx.conf',
                            '-e', "$root/error.log", '-t');
is($rc, 0, 'nginx loads the installed module through the load file')
    or diag $out;

$h->done;
