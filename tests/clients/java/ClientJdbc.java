// pgjdbc (Debian libpostgresql-jdbc-java) through tokengate, run by tests/clients/test_jdbc.py:
//   java -cp <dir>:/usr/share/java/postgresql.jar ClientJdbc URL USER TOKEN TABLE
// The URL carries prepareThreshold. Prints `key=value` facts for the Python side; never prints a token.
// An SQLException ends the program with error_sqlstate=… / error_message=… and exit code 3.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.time.ZoneOffset;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class ClientJdbc {
    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    static Connection connect(String url, String user, String password) throws SQLException {
        Properties p = new Properties();
        p.setProperty("user", user);
        p.setProperty("password", password);
        return DriverManager.getConnection(url, p);
    }

    public static void main(String[] args) throws Exception {
        String url = args[0], user = args[1], token = args[2], table = args[3];
        try (Connection c = connect(url, user, token)) {
            out("server_version", c.getMetaData().getDatabaseProductVersion());
            // The same PreparedStatement 7 times: crosses prepareThreshold 0/1/5.
            try (PreparedStatement ps = c.prepareStatement("select ?::int + 1, ?::text, ?::timestamptz, current_user")) {
                List<String> got = new ArrayList<>();
                for (int i = 0; i < 7; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "ünï'" + i);
                    ps.setObject(3, OffsetDateTime.of(2026, 1, 2, 3, 4, 5, 0, ZoneOffset.UTC));
                    try (ResultSet rs = ps.executeQuery()) {
                        rs.next();
                        got.add(rs.getInt(1) + "|" + rs.getString(2) + "|"
                                + rs.getObject(3, OffsetDateTime.class).withOffsetSameInstant(ZoneOffset.UTC) + "|" + rs.getString(4));
                    }
                }
                out("prepared", String.join(";", got));
            }

            // Batch inserts in a transaction, committed; then a batch rolled back.
            try (Statement st = c.createStatement()) {
                st.execute("create table " + table + " (id int primary key, name text not null, at timestamptz)");
            }
            c.setAutoCommit(false);
            try (PreparedStatement ps = c.prepareStatement("insert into " + table + " values (?, ?, now())")) {
                for (int i = 1; i <= 1000; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.addBatch();
                }
                int[] counts = ps.executeBatch();
                out("batch_count", counts.length);
                c.commit();
                for (int i = 1001; i <= 1100; i++) {
                    ps.setInt(1, i);
                    ps.setString(2, "row " + i);
                    ps.addBatch();
                }
                ps.executeBatch();
                c.rollback();
            }
            try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select count(*), sum(id) from " + table)) {
                rs.next();
                out("rows_after_rollback", rs.getLong(1) + "|" + rs.getLong(2));
            }
            c.commit();

            // 100k rows fetched with a cursor (fetch size: Execute with a row limit, PortalSuspended).
            try (Statement st = c.createStatement()) {
                st.setFetchSize(5000);
                try (ResultSet rs = st.executeQuery("select g, md5(g::text) from generate_series(1, 100000) g")) {
                    long n = 0, sum = 0;
                    while (rs.next()) { n++; sum += rs.getLong(1); }
                    out("big", n + "|" + sum);
                }
            }
            c.commit();
            c.setAutoCommit(true);

            // DatabaseMetaData: what DBeaver and BI tools call first.
            DatabaseMetaData md = c.getMetaData();
            try (ResultSet rs = md.getTables(null, "public", table, new String[] {"TABLE"})) {
                List<String> t = new ArrayList<>();
                while (rs.next()) t.add(rs.getString("TABLE_SCHEM") + "." + rs.getString("TABLE_NAME") + ":" + rs.getString("TABLE_TYPE"));
                out("tables", String.join(",", t));
            }
            try (ResultSet rs = md.getColumns(null, "public", table, null)) {
                List<String> cols = new ArrayList<>();
                while (rs.next()) cols.add(rs.getString("COLUMN_NAME") + ":" + rs.getString("TYPE_NAME") + ":" + rs.getString("IS_NULLABLE"));
                out("columns", String.join(",", cols));
            }
            try (ResultSet rs = md.getPrimaryKeys(null, "public", table)) {
                rs.next();
                out("pk", rs.getString("COLUMN_NAME"));
            }

            // Statement.cancel() from another thread.
            try (Statement st = c.createStatement()) {
                Thread t = new Thread(() -> {
                    // Wait until the statement runs upstream (seen from a second connection), then cancel.
                    try (Connection w = connect(url, user, token);
                         PreparedStatement q = w.prepareStatement("select count(*) from pg_stat_activity where state = 'active' and query = 'select pg_sleep(30)'")) {
                        for (int i = 0; i < 300; i++) {
                            try (ResultSet r = q.executeQuery()) { r.next(); if (r.getInt(1) > 0) break; }
                            Thread.sleep(50);
                        }
                        st.cancel();
                    } catch (Exception e) { out("cancel_thread_error", e); }
                });
                long t0 = System.nanoTime();
                t.start();
                try {
                    st.execute("select pg_sleep(30)");
                    out("cancel", "not cancelled");
                } catch (SQLException e) {
                    out("cancel", e.getSQLState());
                }
                out("cancel_ms_under_10000", (System.nanoTime() - t0) / 1_000_000 < 10_000);
                t.join();
                try (ResultSet rs = st.executeQuery("select 42")) { rs.next(); out("after_cancel", rs.getInt(1)); }
            }

            // Token statements through PreparedStatement (thresholds apply to them too).
            String name = "jdbc_" + Long.toHexString(System.nanoTime());
            String newToken;
            try (PreparedStatement ps = c.prepareStatement("CREATE API TOKEN " + name + " MAX DURATION '2h' COMMENT 'from pgjdbc'");
                 ResultSet rs = ps.executeQuery()) {
                ResultSetMetaData rmd = rs.getMetaData();
                List<String> cols = new ArrayList<>();
                for (int k = 1; k <= rmd.getColumnCount(); k++) cols.add(rmd.getColumnName(k) + ":" + rmd.getColumnTypeName(k));
                out("create_columns", String.join(",", cols));
                rs.next();
                out("create_name", rs.getString("name"));
                newToken = rs.getString("token");
                out("create_token_parts", newToken.split("\\.").length);
                OffsetDateTime exp = rs.getObject("expires_at", OffsetDateTime.class);
                out("create_expires_in_s", exp.toEpochSecond() - System.currentTimeMillis() / 1000);
            }
            try (Connection c2 = connect(url, user, newToken); Statement st = c2.createStatement();
                 ResultSet rs = st.executeQuery("select current_user")) {
                rs.next();
                out("new_token_user", rs.getString(1));
            }
            try (PreparedStatement ps = c.prepareStatement("ALTER API TOKEN " + name + " SET COMMENT 'changed by pgjdbc'")) {
                for (int i = 0; i < 3; i++) ps.executeUpdate();
            }
            try (PreparedStatement ps = c.prepareStatement("SHOW API TOKENS")) {
                for (int i = 0; i < 6; i++) {
                    try (ResultSet rs = ps.executeQuery()) {
                        while (rs.next()) {
                            if (i == 5 && rs.getString("name").equals(name)) {
                                out("show", rs.getString("status") + "|" + rs.getString("comment") + "|" + rs.getString("user")
                                        + "|" + rs.getObject("created_at", OffsetDateTime.class).getOffset());
                            }
                        }
                    }
                }
            }
            try (Statement st = c.createStatement()) {
                out("drop_update_count", st.executeUpdate("DROP API TOKEN " + name));
                try {
                    st.execute("DROP API TOKEN " + name);
                    out("drop_again", "ok");
                } catch (SQLException e) {
                    out("drop_again", e.getSQLState());
                }
            }
            try (Connection c3 = connect(url, user, newToken)) {
                out("revoked_login", "connected");
            } catch (SQLException e) {
                out("revoked_login", e.getSQLState());
                out("revoked_login_leaks_token", String.valueOf(e.getMessage()).contains(newToken));
            }
        } catch (SQLException e) {
            out("error_sqlstate", e.getSQLState());
            out("error_message", String.valueOf(e.getMessage()).replace(token, "<token>"));
            System.exit(3);
        }
    }
}
