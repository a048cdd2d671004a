
/*
 * Copyright (C) webhook_lock authors
 */


#include <ngx_config.h>
#include <ngx_core.h>
#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "ngx_http_webhook_lock_formats.h"
#include "ngx_http_webhook_lock_payload.h"


#define NGX_HTTP_WEBHOOK_LOCK_SENDER  0
#define NGX_HTTP_WEBHOOK_LOCK_ID      1
#define NGX_HTTP_WEBHOOK_LOCK_INBOX   2


typedef struct {
    ngx_pool_t                        *pool;
    ngx_http_webhook_lock_payload_t   *pl;
    ngx_str_t                         *detail;

    /* distinct senders and ids, of ngx_str_node_t */
    ngx_rbtree_t                       seen[2];
    ngx_rbtree_node_t                  sentinel[2];

    /* the format's own rule gives the field: no webhook_* override */
    ngx_uint_t                         own[3];
} ngx_http_webhook_lock_extract_t;


typedef struct {
    ngx_http_webhook_lock_extract_t   *ex;
    ngx_uint_t                         role;
    ngx_uint_t                         found;
} ngx_http_webhook_lock_found_t;


/* a WhatsApp contact by its wa_id */

typedef struct {
    ngx_str_node_t                     sn;
    cJSON                             *contact;
} ngx_http_webhook_lock_contact_t;


typedef struct {
    ngx_rbtree_t                       tree;
    ngx_rbtree_node_t                  sentinel;
    cJSON                             *only;
} ngx_http_webhook_lock_contacts_t;


static ngx_int_t ngx_http_webhook_lock_whatsapp(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root);
static ngx_int_t ngx_http_webhook_lock_whatsapp_value(
    ngx_http_webhook_lock_extract_t *ex, cJSON *value);
static ngx_int_t ngx_http_webhook_lock_whatsapp_message(
    ngx_http_webhook_lock_extract_t *ex, ngx_http_webhook_lock_contacts_t *cs,
    cJSON *m);
static ngx_int_t ngx_http_webhook_lock_whatsapp_contacts(
    ngx_http_webhook_lock_extract_t *ex, cJSON *contacts,
    ngx_http_webhook_lock_contacts_t *cs);
static cJSON *ngx_http_webhook_lock_whatsapp_contact(
    ngx_http_webhook_lock_contacts_t *cs, cJSON *message);
static ngx_int_t ngx_http_webhook_lock_meta(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root, char *object);
static ngx_int_t ngx_http_webhook_lock_meta_event(
    ngx_http_webhook_lock_extract_t *ex, cJSON *entry, cJSON *ev);
static ngx_int_t ngx_http_webhook_lock_tiktok(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root);
static ngx_int_t ngx_http_webhook_lock_twilio(
    ngx_http_webhook_lock_extract_t *ex, ngx_http_webhook_lock_rules_t *rules,
    u_char *body, size_t len);
static ngx_uint_t ngx_http_webhook_lock_twilio_message(ngx_array_t *fields);
static ngx_int_t ngx_http_webhook_lock_twilio_inbox(
    ngx_http_webhook_lock_extract_t *ex, ngx_array_t *fields);
static ngx_int_t ngx_http_webhook_lock_telegram(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root);
static ngx_int_t ngx_http_webhook_lock_line(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root);
static ngx_int_t ngx_http_webhook_lock_sms(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root);
static ngx_int_t ngx_http_webhook_lock_fields(
    ngx_http_webhook_lock_extract_t *ex, ngx_array_t *fields,
    ngx_array_t *paths, ngx_uint_t role);
static ngx_int_t ngx_http_webhook_lock_paths(
    ngx_http_webhook_lock_extract_t *ex, cJSON *root, ngx_array_t *paths,
    ngx_uint_t role);
static ngx_int_t ngx_http_webhook_lock_path_value(void *data,
    ngx_str_t *value);
static cJSON *ngx_http_webhook_lock_get(cJSON *object, char *name);
static ngx_int_t ngx_http_webhook_lock_array(
    ngx_http_webhook_lock_extract_t *ex, cJSON *object, char *name,
    cJSON **array);
static cJSON *ngx_http_webhook_lock_first(cJSON **objects, char **names,
    ngx_uint_t n);
static ngx_int_t ngx_http_webhook_lock_own(
    ngx_http_webhook_lock_extract_t *ex, ngx_uint_t role, cJSON *item);
static ngx_int_t ngx_http_webhook_lock_add(
    ngx_http_webhook_lock_extract_t *ex, ngx_uint_t role, ngx_str_t *value);


ngx_conf_enum_t  ngx_http_webhook_lock_formats[] = {
    { ngx_string("off"), NGX_HTTP_WEBHOOK_LOCK_OFF },
    { ngx_string("whatsapp"), NGX_HTTP_WEBHOOK_LOCK_WHATSAPP },
    { ngx_string("instagram"), NGX_HTTP_WEBHOOK_LOCK_INSTAGRAM },
    { ngx_string("messenger"), NGX_HTTP_WEBHOOK_LOCK_MESSENGER },
    { ngx_string("tiktok"), NGX_HTTP_WEBHOOK_LOCK_TIKTOK },
    { ngx_string("twilio"), NGX_HTTP_WEBHOOK_LOCK_TWILIO },
    { ngx_string("json"), NGX_HTTP_WEBHOOK_LOCK_JSON },
    { ngx_string("telegram"), NGX_HTTP_WEBHOOK_LOCK_TELEGRAM },
    { ngx_string("line"), NGX_HTTP_WEBHOOK_LOCK_LINE },
    { ngx_string("sms"), NGX_HTTP_WEBHOOK_LOCK_SMS },
    { ngx_null_string, 0 }
};


static char  *ngx_http_webhook_lock_roles[] = {
    "sender", "message id", "inbox"
};


ngx_uint_t
ngx_http_webhook_lock_format_is_form(ngx_uint_t format)
{
    return (format == NGX_HTTP_WEBHOOK_LOCK_TWILIO);
}


ngx_int_t
ngx_http_webhook_lock_extract(ngx_pool_t *pool,
    ngx_http_webhook_lock_rules_t *rules, u_char *body, size_t len,
    ngx_http_webhook_lock_payload_t *pl, ngx_str_t *detail)
{
    cJSON                            *root;
    ngx_int_t                         rc;
    ngx_uint_t                        i;
    ngx_http_webhook_lock_extract_t   ex;

    ngx_str_null(detail);
    ngx_str_null(&pl->inbox);

    if (ngx_array_init(&pl->senders, pool, 1, sizeof(ngx_str_t)) != NGX_OK
        || ngx_array_init(&pl->message_ids, pool, 1, sizeof(ngx_str_t))
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    ex.pool = pool;
    ex.pl = pl;
    ex.detail = detail;

    for (i = 0; i < 2; i++) {
        ngx_rbtree_init(&ex.seen[i], &ex.sentinel[i],
                        ngx_str_rbtree_insert_value);
    }

    ex.own[NGX_HTTP_WEBHOOK_LOCK_SENDER] = (rules->senders == NULL);
    ex.own[NGX_HTTP_WEBHOOK_LOCK_ID] = (rules->message_ids == NULL);
    ex.own[NGX_HTTP_WEBHOOK_LOCK_INBOX] = (rules->inboxes == NULL);

    if (rules->format == NGX_HTTP_WEBHOOK_LOCK_OFF) {
        return NGX_OK;
    }

    if (rules->format == NGX_HTTP_WEBHOOK_LOCK_TWILIO) {
        return ngx_http_webhook_lock_twilio(&ex, rules, body, len);
    }

    root = ngx_http_webhook_lock_json_parse(pool, body, len, detail);
    if (root == NULL) {
        return detail->len ? NGX_DECLINED : NGX_ERROR;
    }

    if (rules->format == NGX_HTTP_WEBHOOK_LOCK_SMS) {

        if (!cJSON_IsArray(root)) {
            ngx_str_set(detail, "top-level value is not an array");
            return NGX_DECLINED;
        }

    } else if (rules->format != NGX_HTTP_WEBHOOK_LOCK_JSON
               && !cJSON_IsObject(root))
    {
        ngx_str_set(detail, "top-level value is not an object");
        return NGX_DECLINED;
    }

    if (ex.own[NGX_HTTP_WEBHOOK_LOCK_SENDER]
        || ex.own[NGX_HTTP_WEBHOOK_LOCK_ID]
        || ex.own[NGX_HTTP_WEBHOOK_LOCK_INBOX])
    {
        switch (rules->format) {

        case NGX_HTTP_WEBHOOK_LOCK_WHATSAPP:
            rc = ngx_http_webhook_lock_whatsapp(&ex, root);
            break;

        case NGX_HTTP_WEBHOOK_LOCK_INSTAGRAM:
            rc = ngx_http_webhook_lock_meta(&ex, root, "instagram");
            break;

        case NGX_HTTP_WEBHOOK_LOCK_MESSENGER:
            rc = ngx_http_webhook_lock_meta(&ex, root, "page");
            break;

        case NGX_HTTP_WEBHOOK_LOCK_TIKTOK:
            rc = ngx_http_webhook_lock_tiktok(&ex, root);
            break;

        case NGX_HTTP_WEBHOOK_LOCK_TELEGRAM:
            rc = ngx_http_webhook_lock_telegram(&ex, root);
            break;

        case NGX_HTTP_WEBHOOK_LOCK_LINE:
            rc = ngx_http_webhook_lock_line(&ex, root);
            break;

        case NGX_HTTP_WEBHOOK_LOCK_SMS:
            rc = ngx_http_webhook_lock_sms(&ex, root);
            break;

        default: /* NGX_HTTP_WEBHOOK_LOCK_JSON: nothing but the paths */
            rc = NGX_OK;
            break;
        }

        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (rules->senders) {
        rc = ngx_http_webhook_lock_paths(&ex, root, rules->senders,
                                         NGX_HTTP_WEBHOOK_LOCK_SENDER);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (rules->message_ids) {
        rc = ngx_http_webhook_lock_paths(&ex, root, rules->message_ids,
                                         NGX_HTTP_WEBHOOK_LOCK_ID);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    if (rules->inboxes) {
        rc = ngx_http_webhook_lock_paths(&ex, root, rules->inboxes,
                                         NGX_HTTP_WEBHOOK_LOCK_INBOX);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * Meta Cloud API: entry[*].changes[*].value; 360dialog: the body itself.
 */

static ngx_int_t
ngx_http_webhook_lock_whatsapp(ngx_http_webhook_lock_extract_t *ex,
    cJSON *root)
{
    cJSON      *entries, *entry, *changes, *change, *value;
    ngx_int_t   rc;

    rc = ngx_http_webhook_lock_array(ex, root, "entry", &entries);
    if (rc != NGX_OK) {
        return rc;
    }

    if (entries == NULL) {
        return ngx_http_webhook_lock_whatsapp_value(ex, root);
    }

    cJSON_ArrayForEach(entry, entries) {

        rc = ngx_http_webhook_lock_array(ex, entry, "changes", &changes);
        if (rc != NGX_OK) {
            return rc;
        }

        cJSON_ArrayForEach(change, changes) {

            value = ngx_http_webhook_lock_get(change, "value");

            if (value == NULL || cJSON_IsNull(value)) {
                continue;
            }

            if (!cJSON_IsObject(value)) {
                ngx_str_set(ex->detail, "value is not an object");
                return NGX_DECLINED;
            }

            rc = ngx_http_webhook_lock_whatsapp_value(ex, value);
            if (rc != NGX_OK) {
                return rc;
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_whatsapp_value(ngx_http_webhook_lock_extract_t *ex,
    cJSON *value)
{
    cJSON                             *contacts, *messages, *echoes, *m;
    cJSON                             *metadata, *obj[3], *item;
    ngx_int_t                          rc;
    ngx_http_webhook_lock_contacts_t   cs;

    static char  *echo[] = { "to_parent_user_id", "to_user_id", "to" };

    metadata = ngx_http_webhook_lock_get(value, "metadata");
    item = ngx_http_webhook_lock_get(metadata, "phone_number_id");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, item);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_array(ex, value, "messages", &messages);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_array(ex, value, "message_echoes", &echoes);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_array(ex, value, "contacts", &contacts);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_whatsapp_contacts(ex, contacts, &cs);
    if (rc != NGX_OK) {
        return rc;
    }

    cJSON_ArrayForEach(m, messages) {
        rc = ngx_http_webhook_lock_whatsapp_message(ex, &cs, m);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    cJSON_ArrayForEach(m, echoes) {

        obj[0] = m;
        obj[1] = m;
        obj[2] = m;

        item = ngx_http_webhook_lock_first(obj, echo, 3);

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER,
                                       item);
        if (rc != NGX_OK) {
            return rc;
        }

        item = ngx_http_webhook_lock_get(m, "id");

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * The sender of a message: the first of its and its contact's ids, from
 * the most stable (a parent business-scoped user id) to the phone number;
 * "system" messages carry theirs in "system".
 */

static ngx_int_t
ngx_http_webhook_lock_whatsapp_message(ngx_http_webhook_lock_extract_t *ex,
    ngx_http_webhook_lock_contacts_t *cs, cJSON *m)
{
    cJSON      *type, *system, *contact, *obj[5], *item;
    ngx_int_t   rc;

    static char  *message[] = {
        "from_parent_user_id", "parent_user_id", "from_user_id", "user_id",
        "from"
    };

    static char  *sys[] = { "parent_user_id", "user_id", "wa_id", "from" };

    if (ex->own[NGX_HTTP_WEBHOOK_LOCK_SENDER]) {

        type = ngx_http_webhook_lock_get(m, "type");

        if (cJSON_IsString(type)
            && ngx_strcmp(type->valuestring, "system") == 0)
        {
            system = ngx_http_webhook_lock_get(m, "system");

            obj[0] = system;
            obj[1] = system;
            obj[2] = system;
            obj[3] = m;

            item = ngx_http_webhook_lock_first(obj, sys, 4);

        } else {
            contact = ngx_http_webhook_lock_whatsapp_contact(cs, m);

            obj[0] = m;
            obj[1] = contact;
            obj[2] = m;
            obj[3] = contact;
            obj[4] = m;

            item = ngx_http_webhook_lock_first(obj, message, 5);
        }

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER,
                                       item);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    item = ngx_http_webhook_lock_get(m, "id");

    return ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
}


/*
 * Indexes "contacts" by wa_id (the first of equal ones wins), so that
 * matching many messages against many contacts stays O(n log n).
 */

static ngx_int_t
ngx_http_webhook_lock_whatsapp_contacts(ngx_http_webhook_lock_extract_t *ex,
    cJSON *contacts, ngx_http_webhook_lock_contacts_t *cs)
{
    cJSON                            *c, *item;
    u_char                            buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_str_t                         id;
    ngx_http_webhook_lock_contact_t  *wc;

    ngx_rbtree_init(&cs->tree, &cs->sentinel, ngx_str_rbtree_insert_value);
    cs->only = NULL;

    if (contacts == NULL
        || contacts->child == NULL
        || !ex->own[NGX_HTTP_WEBHOOK_LOCK_SENDER])
    {
        return NGX_OK;
    }

    if (contacts->child->next == NULL) {
        /* matching or not, the only contact is the one */
        cs->only = contacts->child;
        return NGX_OK;
    }

    cJSON_ArrayForEach(c, contacts) {

        item = ngx_http_webhook_lock_get(c, "wa_id");

        if (!ngx_http_webhook_lock_json_value(item, buf, &id)) {
            continue;
        }

        if (ngx_str_rbtree_lookup(&cs->tree, &id, 0) != NULL) {
            continue;
        }

        wc = ngx_palloc(ex->pool, sizeof(ngx_http_webhook_lock_contact_t));
        if (wc == NULL) {
            return NGX_ERROR;
        }

        wc->sn.str.len = id.len;
        wc->sn.str.data = ngx_pnalloc(ex->pool, id.len);
        if (wc->sn.str.data == NULL) {
            return NGX_ERROR;
        }

        ngx_memcpy(wc->sn.str.data, id.data, id.len);

        wc->sn.node.key = 0;
        wc->contact = c;

        ngx_rbtree_insert(&cs->tree, &wc->sn.node);
    }

    return NGX_OK;
}


/* the contact whose wa_id is the message's "from", else the only one */

static cJSON *
ngx_http_webhook_lock_whatsapp_contact(ngx_http_webhook_lock_contacts_t *cs,
    cJSON *message)
{
    cJSON                            *item;
    u_char                            buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_str_t                         from;
    ngx_str_node_t                   *sn;
    ngx_http_webhook_lock_contact_t  *wc;

    item = ngx_http_webhook_lock_get(message, "from");

    if (ngx_http_webhook_lock_json_value(item, buf, &from)) {
        sn = ngx_str_rbtree_lookup(&cs->tree, &from, 0);

        if (sn != NULL) {
            wc = (ngx_http_webhook_lock_contact_t *) sn;
            return wc->contact;
        }
    }

    return cs->only;
}


/*
 * Instagram and Messenger: entry[*].messaging[*] and entry[*].standby[*]
 * events carrying a message, a reaction or a postback.
 */

static ngx_int_t
ngx_http_webhook_lock_meta(ngx_http_webhook_lock_extract_t *ex, cJSON *root,
    char *object)
{
    cJSON       *obj, *entries, *entry, *events, *ev;
    ngx_int_t    rc;
    ngx_uint_t   i;

    static char  *lists[] = { "messaging", "standby" };

    obj = ngx_http_webhook_lock_get(root, "object");

    if (obj != NULL && !cJSON_IsNull(obj)) {

        if (!cJSON_IsString(obj)) {
            ngx_str_set(ex->detail, "object is not a string");
            return NGX_DECLINED;
        }

        if (ngx_strcmp(obj->valuestring, object) != 0) {
            /* another product's webhook: not ours to lock */
            return NGX_OK;
        }
    }

    rc = ngx_http_webhook_lock_array(ex, root, "entry", &entries);
    if (rc != NGX_OK) {
        return rc;
    }

    cJSON_ArrayForEach(entry, entries) {

        for (i = 0; i < 2; i++) {

            rc = ngx_http_webhook_lock_array(ex, entry, lists[i], &events);
            if (rc != NGX_OK) {
                return rc;
            }

            cJSON_ArrayForEach(ev, events) {
                rc = ngx_http_webhook_lock_meta_event(ex, entry, ev);
                if (rc != NGX_OK) {
                    return rc;
                }
            }
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_meta_event(ngx_http_webhook_lock_extract_t *ex,
    cJSON *entry, cJSON *ev)
{
    cJSON       *msg, *who, *item;
    u_char       buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_int_t    rc;
    ngx_str_t    value;

    msg = ngx_http_webhook_lock_get(ev, "message");

    if (!cJSON_IsObject(msg)) {
        msg = NULL;

        if (!cJSON_IsObject(ngx_http_webhook_lock_get(ev, "reaction"))
            && !cJSON_IsObject(ngx_http_webhook_lock_get(ev, "postback")))
        {
            /* read, delivery, and the like */
            return NGX_OK;
        }
    }

    if (cJSON_IsTrue(ngx_http_webhook_lock_get(msg, "is_echo"))) {
        who = ngx_http_webhook_lock_get(ev, "recipient");

    } else {
        who = ngx_http_webhook_lock_get(ev, "sender");
    }

    who = ngx_http_webhook_lock_get(who, "id");

    if (ngx_http_webhook_lock_json_value(who, buf, &value)) {

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER, who);
        if (rc != NGX_OK) {
            return rc;
        }

        /* the inbox is that of the first entry that locks */

        item = ngx_http_webhook_lock_get(entry, "id");

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, item);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    item = ngx_http_webhook_lock_get(msg, "mid");

    return ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
}


/*
 * TikTok: "content" is a JSON text inside a JSON string.
 */

static ngx_int_t
ngx_http_webhook_lock_tiktok(ngx_http_webhook_lock_extract_t *ex,
    cJSON *root)
{
    cJSON      *content, *inner, *item;
    u_char     *text;
    ngx_int_t   rc;
    ngx_str_t   detail;

    item = ngx_http_webhook_lock_get(root, "user_openid");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, item);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ex->own[NGX_HTTP_WEBHOOK_LOCK_SENDER]
        && !ex->own[NGX_HTTP_WEBHOOK_LOCK_ID])
    {
        return NGX_OK;
    }

    content = ngx_http_webhook_lock_get(root, "content");

    if (content == NULL
        || cJSON_IsNull(content)
        || (cJSON_IsString(content) && content->valuestring[0] == '\0'))
    {
        return NGX_OK;
    }

    if (cJSON_IsString(content)) {
        text = (u_char *) content->valuestring;

        inner = ngx_http_webhook_lock_json_parse(ex->pool, text,
                                                 ngx_strlen(text), &detail);
        if (inner == NULL) {

            if (detail.len == 0) {
                return NGX_ERROR;
            }

            return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                                "content: %V", &detail);
        }

        content = inner;
    }

    if (!cJSON_IsObject(content)) {
        ngx_str_set(ex->detail, "content is not an object");
        return NGX_DECLINED;
    }

    item = ngx_http_webhook_lock_get(content, "conversation_id");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER, item);
    if (rc != NGX_OK) {
        return rc;
    }

    item = ngx_http_webhook_lock_get(content, "message_id");

    return ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
}


/*
 * Twilio: a form.  Status callbacks (no body, no media, no location) are
 * not messages and bypass, whatever webhook_sender says.
 */

static ngx_int_t
ngx_http_webhook_lock_twilio(ngx_http_webhook_lock_extract_t *ex,
    ngx_http_webhook_lock_rules_t *rules, u_char *body, size_t len)
{
    ngx_int_t     rc;
    ngx_str_t    *v;
    ngx_array_t   fields;

    rc = ngx_http_webhook_lock_form_parse(ex->pool, body, len, &fields,
                                          ex->detail);
    if (rc != NGX_OK) {
        return rc;
    }

    if (!ngx_http_webhook_lock_twilio_message(&fields)) {
        return NGX_OK;
    }

    if (rules->senders) {
        rc = ngx_http_webhook_lock_fields(ex, &fields, rules->senders,
                                          NGX_HTTP_WEBHOOK_LOCK_SENDER);

    } else {
        v = ngx_http_webhook_lock_form_get(&fields, "From");
        rc = (v && v->len)
             ? ngx_http_webhook_lock_add(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER, v)
             : NGX_OK;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (rules->message_ids) {
        rc = ngx_http_webhook_lock_fields(ex, &fields, rules->message_ids,
                                          NGX_HTTP_WEBHOOK_LOCK_ID);

    } else {
        v = ngx_http_webhook_lock_form_get(&fields, "MessageSid");

        if (v == NULL || v->len == 0) {
            v = ngx_http_webhook_lock_form_get(&fields, "SmsSid");
        }

        rc = (v && v->len)
             ? ngx_http_webhook_lock_add(ex, NGX_HTTP_WEBHOOK_LOCK_ID, v)
             : NGX_OK;
    }

    if (rc != NGX_OK) {
        return rc;
    }

    if (rules->inboxes) {
        return ngx_http_webhook_lock_fields(ex, &fields, rules->inboxes,
                                            NGX_HTTP_WEBHOOK_LOCK_INBOX);
    }

    return ngx_http_webhook_lock_twilio_inbox(ex, &fields);
}


static ngx_uint_t
ngx_http_webhook_lock_twilio_message(ngx_array_t *fields)
{
    ngx_str_t  *v;

    v = ngx_http_webhook_lock_form_get(fields, "Body");
    if (v && v->len) {
        return 1;
    }

    v = ngx_http_webhook_lock_form_get(fields, "MediaUrl0");
    if (v && v->len) {
        return 1;
    }

    v = ngx_http_webhook_lock_form_get(fields, "NumMedia");
    if (v && v->len && ngx_atoi(v->data, v->len) > 0) {
        return 1;
    }

    v = ngx_http_webhook_lock_form_get(fields, "Latitude");
    if (v && v->len) {
        return 1;
    }

    return 0;
}


/* MessagingServiceSid, else "AccountSid:To" */

static ngx_int_t
ngx_http_webhook_lock_twilio_inbox(ngx_http_webhook_lock_extract_t *ex,
    ngx_array_t *fields)
{
    u_char     *p, buf[NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX];
    ngx_str_t  *v, *account, *to, inbox;

    v = ngx_http_webhook_lock_form_get(fields, "MessagingServiceSid");

    if (v && v->len) {
        return ngx_http_webhook_lock_add(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, v);
    }

    account = ngx_http_webhook_lock_form_get(fields, "AccountSid");
    to = ngx_http_webhook_lock_form_get(fields, "To");

    if (account == NULL || account->len == 0 || to == NULL || to->len == 0) {
        return NGX_OK;
    }

    if (account->len + 1 + to->len > NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX) {
        return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                            "inbox longer than %d bytes",
                                            NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX);
    }

    p = ngx_cpymem(buf, account->data, account->len);
    *p++ = ':';
    p = ngx_cpymem(p, to->data, to->len);

    inbox.data = buf;
    inbox.len = p - buf;

    return ngx_http_webhook_lock_add(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, &inbox);
}


/*
 * Telegram: one update per body, and its kind is the one field besides
 * "update_id".  A callback query is a button the user pressed: its "from"
 * is the user, while its "message" is the bot's own.  update_id is the
 * id: unique per bot, where message_id is unique only per chat.
 */

static ngx_int_t
ngx_http_webhook_lock_telegram(ngx_http_webhook_lock_extract_t *ex,
    cJSON *root)
{
    cJSON       *update, *item;
    u_char       buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_int_t    rc;
    ngx_str_t    value;
    ngx_uint_t   i;

    static char  *kinds[] = {
        "callback_query", "message", "edited_message", "business_message",
        "edited_business_message"
    };

    for (i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {

        update = ngx_http_webhook_lock_get(root, kinds[i]);

        if (update == NULL || cJSON_IsNull(update)) {
            continue;
        }

        if (!cJSON_IsObject(update)) {
            return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                                "%s is not an object",
                                                kinds[i]);
        }

        item = ngx_http_webhook_lock_get(update, "from");
        item = ngx_http_webhook_lock_get(item, "id");

        if (!ngx_http_webhook_lock_json_value(item, buf, &value)) {
            /* left out for messages sent to channels: nobody to lock */
            return NGX_OK;
        }

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER,
                                       item);
        if (rc != NGX_OK) {
            return rc;
        }

        item = ngx_http_webhook_lock_get(root, "update_id");

        return ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
    }

    /* my_chat_member, chat_member, poll, message_reaction, and the like */

    return NGX_OK;
}


/*
 * LINE: every "message" event of events[*] is a user's message; follow,
 * unfollow, postback and the rest are not.  webhookEventId stays the same
 * when LINE redelivers an event, message.id is the older fallback.
 */

static ngx_int_t
ngx_http_webhook_lock_line(ngx_http_webhook_lock_extract_t *ex, cJSON *root)
{
    cJSON       *events, *ev, *type, *msg, *item;
    u_char       buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_int_t    rc;
    ngx_str_t    value;

    item = ngx_http_webhook_lock_get(root, "destination");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, item);
    if (rc != NGX_OK) {
        return rc;
    }

    rc = ngx_http_webhook_lock_array(ex, root, "events", &events);
    if (rc != NGX_OK) {
        return rc;
    }

    cJSON_ArrayForEach(ev, events) {

        type = ngx_http_webhook_lock_get(ev, "type");

        if (type != NULL && !cJSON_IsNull(type) && !cJSON_IsString(type)) {
            ngx_str_set(ex->detail, "event type is not a string");
            return NGX_DECLINED;
        }

        if (!cJSON_IsString(type)
            || ngx_strcmp(type->valuestring, "message") != 0)
        {
            continue;
        }

        item = ngx_http_webhook_lock_get(ev, "source");
        item = ngx_http_webhook_lock_get(item, "userId");

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER,
                                       item);
        if (rc != NGX_OK) {
            return rc;
        }

        item = ngx_http_webhook_lock_get(ev, "webhookEventId");

        if (!ngx_http_webhook_lock_json_value(item, buf, &value)) {
            msg = ngx_http_webhook_lock_get(ev, "message");
            item = ngx_http_webhook_lock_get(msg, "id");
        }

        rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
        if (rc != NGX_OK) {
            return rc;
        }
    }

    return NGX_OK;
}


/*
 * Bandwidth: an array of events, of which Chatwoot processes the first.
 * Only "message-received" is a message; "message-delivered" and
 * "message-failed" are status callbacks.
 */

static ngx_int_t
ngx_http_webhook_lock_sms(ngx_http_webhook_lock_extract_t *ex, cJSON *root)
{
    cJSON      *ev, *type, *msg, *item;
    ngx_int_t   rc;

    cJSON_ArrayForEach(ev, root) {
        if (!cJSON_IsObject(ev)) {
            ngx_str_set(ex->detail, "event is not an object");
            return NGX_DECLINED;
        }
    }

    ev = root->child;

    if (ev == NULL) {
        return NGX_OK;
    }

    type = ngx_http_webhook_lock_get(ev, "type");

    if (type != NULL && !cJSON_IsNull(type) && !cJSON_IsString(type)) {
        ngx_str_set(ex->detail, "event type is not a string");
        return NGX_DECLINED;
    }

    if (!cJSON_IsString(type)
        || ngx_strcmp(type->valuestring, "message-received") != 0)
    {
        return NGX_OK;
    }

    msg = ngx_http_webhook_lock_get(ev, "message");

    item = ngx_http_webhook_lock_get(msg, "from");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_SENDER, item);
    if (rc != NGX_OK) {
        return rc;
    }

    item = ngx_http_webhook_lock_get(ev, "to");

    rc = ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_INBOX, item);
    if (rc != NGX_OK) {
        return rc;
    }

    item = ngx_http_webhook_lock_get(msg, "id");

    return ngx_http_webhook_lock_own(ex, NGX_HTTP_WEBHOOK_LOCK_ID, item);
}


ngx_int_t
ngx_http_webhook_lock_telegram_inbox(ngx_pool_t *pool, ngx_str_t *uri,
    ngx_str_t *inbox)
{
    u_char        *p, *last, md[EVP_MAX_MD_SIZE];
    size_t         n;
    unsigned int   len;

    static u_char  prefix[] = "sha256-";

    last = uri->data + uri->len;

    for (p = last; p > uri->data && p[-1] != '/'; p--) {
        /* void */
    }

    n = p - uri->data;

    if (EVP_Digest(p, last - p, md, &len, EVP_sha256(), NULL) != 1) {
        ngx_log_error(NGX_LOG_ALERT, pool->log, 0, "EVP_Digest() failed");
        ERR_clear_error();
        return NGX_ERROR;
    }

    inbox->data = ngx_pnalloc(pool, n + sizeof(prefix) - 1 + 32);
    if (inbox->data == NULL) {
        return NGX_ERROR;
    }

    p = ngx_cpymem(inbox->data, uri->data, n);
    p = ngx_cpymem(p, prefix, sizeof(prefix) - 1);
    p = ngx_hex_dump(p, md, 16);

    inbox->len = p - inbox->data;

    return NGX_OK;
}


/* webhook_* paths for a form: field names, the first non-empty wins */

static ngx_int_t
ngx_http_webhook_lock_fields(ngx_http_webhook_lock_extract_t *ex,
    ngx_array_t *fields, ngx_array_t *paths, ngx_uint_t role)
{
    ngx_str_t                      *name, *v;
    ngx_uint_t                      i;
    ngx_http_webhook_lock_path_t  **path;

    path = paths->elts;

    for (i = 0; i < paths->nelts; i++) {

        name = ngx_http_webhook_lock_path_name(path[i]);
        if (name == NULL) {
            continue;
        }

        v = ngx_http_webhook_lock_form_get(fields, (char *) name->data);

        if (v && v->len) {
            return ngx_http_webhook_lock_add(ex, role, v);
        }
    }

    return NGX_OK;
}


/* webhook_* paths for JSON: ordered fallbacks */

static ngx_int_t
ngx_http_webhook_lock_paths(ngx_http_webhook_lock_extract_t *ex, cJSON *root,
    ngx_array_t *paths, ngx_uint_t role)
{
    ngx_int_t                       rc;
    ngx_uint_t                      i;
    ngx_http_webhook_lock_path_t  **path;
    ngx_http_webhook_lock_found_t   f;

    f.ex = ex;
    f.role = role;

    path = paths->elts;

    for (i = 0; i < paths->nelts; i++) {

        f.found = 0;

        rc = ngx_http_webhook_lock_path_walk(path[i], root,
                                             ngx_http_webhook_lock_path_value,
                                             &f);
        if (rc != NGX_OK) {
            return rc;
        }

        if (f.found) {
            break;
        }
    }

    return NGX_OK;
}


static ngx_int_t
ngx_http_webhook_lock_path_value(void *data, ngx_str_t *value)
{
    ngx_http_webhook_lock_found_t *f = data;

    ngx_int_t  rc;

    f->found = 1;

    rc = ngx_http_webhook_lock_add(f->ex, f->role, value);
    if (rc != NGX_OK) {
        return rc;
    }

    return (f->role == NGX_HTTP_WEBHOOK_LOCK_INBOX) ? NGX_DONE : NGX_OK;
}


static cJSON *
ngx_http_webhook_lock_get(cJSON *object, char *name)
{
    if (!cJSON_IsObject(object)) {
        return NULL;
    }

    return cJSON_GetObjectItemCaseSensitive(object, name);
}


/*
 * "name" of "object" as an array of objects; NULL when it is missing or
 * null; a 400 when it has another type, since nothing can be extracted.
 */

static ngx_int_t
ngx_http_webhook_lock_array(ngx_http_webhook_lock_extract_t *ex,
    cJSON *object, char *name, cJSON **array)
{
    cJSON  *a, *e;

    *array = NULL;

    a = ngx_http_webhook_lock_get(object, name);

    if (a == NULL || cJSON_IsNull(a)) {
        return NGX_OK;
    }

    if (!cJSON_IsArray(a)) {
        return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                            "%s is not an array", name);
    }

    cJSON_ArrayForEach(e, a) {
        if (!cJSON_IsObject(e)) {
            return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                                "%s element is not an object",
                                                name);
        }
    }

    *array = a;

    return NGX_OK;
}


/* the first of objects[i].names[i] that is a value, or NULL */

static cJSON *
ngx_http_webhook_lock_first(cJSON **objects, char **names, ngx_uint_t n)
{
    cJSON       *item;
    u_char       buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_str_t    value;
    ngx_uint_t   i;

    for (i = 0; i < n; i++) {
        item = ngx_http_webhook_lock_get(objects[i], names[i]);

        if (ngx_http_webhook_lock_json_value(item, buf, &value)) {
            return item;
        }
    }

    return NULL;
}


/* a value found by the format's own rule, unless a path overrides it */

static ngx_int_t
ngx_http_webhook_lock_own(ngx_http_webhook_lock_extract_t *ex,
    ngx_uint_t role, cJSON *item)
{
    u_char     buf[NGX_HTTP_WEBHOOK_LOCK_NUMBER_LEN];
    ngx_str_t  value;

    if (!ex->own[role]
        || !ngx_http_webhook_lock_json_value(item, buf, &value))
    {
        return NGX_OK;
    }

    return ngx_http_webhook_lock_add(ex, role, &value);
}


/*
 * Copies a value to the payload: the first inbox wins; senders and ids
 * are kept once each, in order, up to their limits.
 */

static ngx_int_t
ngx_http_webhook_lock_add(ngx_http_webhook_lock_extract_t *ex,
    ngx_uint_t role, ngx_str_t *value)
{
    u_char          *p;
    ngx_str_t       *s;
    ngx_uint_t       i, max;
    ngx_array_t     *a;
    ngx_str_node_t  *sn;

    if (role == NGX_HTTP_WEBHOOK_LOCK_INBOX && ex->pl->inbox.len) {
        return NGX_OK;
    }

    if (value->len > NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX) {
        return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                            "%s longer than %d bytes",
                                            ngx_http_webhook_lock_roles[role],
                                            NGX_HTTP_WEBHOOK_LOCK_VALUE_MAX);
    }

    /*
     * Values end up in keys and in error log lines as they are: a "\n"
     * decoded from the body could forge a log line, and no provider
     * sends control characters in an id.
     */

    for (i = 0; i < value->len; i++) {
        if (value->data[i] < 0x20 || value->data[i] == 0x7f) {
            return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                            "%s with a control character",
                                            ngx_http_webhook_lock_roles[role]);
        }
    }

    if (role != NGX_HTTP_WEBHOOK_LOCK_INBOX
        && ngx_str_rbtree_lookup(&ex->seen[role], value, 0) != NULL)
    {
        return NGX_OK;
    }

    if (role == NGX_HTTP_WEBHOOK_LOCK_SENDER) {
        a = &ex->pl->senders;
        max = NGX_HTTP_WEBHOOK_LOCK_SENDERS_MAX;

    } else if (role == NGX_HTTP_WEBHOOK_LOCK_ID) {
        a = &ex->pl->message_ids;
        max = NGX_HTTP_WEBHOOK_LOCK_IDS_MAX;

    } else {
        a = NULL;
        max = 1;
    }

    if (a && a->nelts == max) {
        return ngx_http_webhook_lock_detail(ex->pool, ex->detail,
                                            "more than %ui %ss", max,
                                            ngx_http_webhook_lock_roles[role]);
    }

    p = ngx_pnalloc(ex->pool, value->len);
    if (p == NULL) {
        return NGX_ERROR;
    }

    ngx_memcpy(p, value->data, value->len);

    if (a == NULL) {
        ex->pl->inbox.data = p;
        ex->pl->inbox.len = value->len;
        return NGX_OK;
    }

    s = ngx_array_push(a);
    if (s == NULL) {
        return NGX_ERROR;
    }

    s->data = p;
    s->len = value->len;

    sn = ngx_palloc(ex->pool, sizeof(ngx_str_node_t));
    if (sn == NULL) {
        return NGX_ERROR;
    }

    sn->node.key = 0;
    sn->str = *s;

    ngx_rbtree_insert(&ex->seen[role], &sn->node);

    return NGX_OK;
}
