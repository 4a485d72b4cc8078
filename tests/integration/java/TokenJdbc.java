// pgjdbc through tokengate (issues 4 and 5): API TOKEN statements with server-side prepare, in autocommit and in a
// transaction, timestamptz read as java.time.OffsetDateTime, DatabaseMetaData, and logging in with a token.
//
// Compiled and run by tests/integration/jdbc.py:  java -cp <dir>:/usr/share/java/postgresql.jar TokenJdbc MODE URL USER PASSWORD [NAME...]
// Prints one `key=value` line per fact for the pytest side to check; an SQLException ends the program with
//   error_sqlstate=… / error_message=… and exit code 3.
import java.sql.Connection;
import java.sql.DatabaseMetaData;
import java.sql.DriverManager;
import java.sql.PreparedStatement;
import java.sql.ResultSet;
import java.sql.ResultSetMetaData;
import java.sql.SQLException;
import java.sql.SQLWarning;
import java.sql.Statement;
import java.time.OffsetDateTime;
import java.util.ArrayList;
import java.util.List;
import java.util.Properties;

public class TokenJdbc {
    static void out(String key, Object value) {
        System.out.println(key + "=" + value);
    }

    static void show(Connection c, String label) throws SQLException {
        // The same PreparedStatement executed several times: with prepareThreshold=1 pgjdbc switches to a named
        // server-side statement; with 0 it stays unnamed.
        try (PreparedStatement ps = c.prepareStatement("SHOW API TOKENS")) {
            for (int i = 0; i < 3; i++) {
                try (ResultSet rs = ps.executeQuery()) {
                    ResultSetMetaData md = rs.getMetaData();
                    List<String> cols = new ArrayList<>();
                    for (int k = 1; k <= md.getColumnCount(); k++) cols.add(md.getColumnName(k) + ":" + md.getColumnTypeName(k));
                    if (i == 0) out(label + "_columns", String.join(",", cols));
                    while (rs.next()) {
                        OffsetDateTime exp = rs.getObject("expires_at", OffsetDateTime.class);
                        OffsetDateTime created = rs.getObject("created_at", OffsetDateTime.class);
                        if (i == 0) out(label + "_row", rs.getString("name") + "|" + rs.getString("status") + "|"
                                + rs.getString("comment") + "|" + exp + "|" + created + "|" + rs.getObject("last_used_at"));
                    }
                }
            }
        }
    }

    static String create(Connection c, String name, String label) throws SQLException {
        try (PreparedStatement ps = c.prepareStatement(
                "CREATE API TOKEN " + name + " MAX DURATION '7d' COMMENT 'из JDBC'")) {
            try (ResultSet rs = ps.executeQuery()) {
                if (!rs.next()) throw new IllegalStateException("CREATE API TOKEN returned no row");
                OffsetDateTime exp = rs.getObject("expires_at", OffsetDateTime.class);
                out(label + "_name", rs.getString(1));
                out(label + "_token", rs.getString(2));
                out(label + "_expires_at", exp);
                out(label + "_expires_offset", exp.getOffset());
                out(label + "_more_rows", rs.next());
            }
            for (SQLWarning w = ps.getWarnings(); w != null; w = w.getNextWarning()) out(label + "_notice", w.getMessage());
        }
        return name;
    }

    static void sql(Connection c, String name, String txName, String metaTable) throws SQLException {
        // autocommit
        out("autocommit", c.getAutoCommit());
        create(c, name, "ac");
        show(c, "ac_show");
        try (Statement st = c.createStatement()) {
            out("alter_count", st.executeUpdate("ALTER API TOKEN " + name + " SET COMMENT 'changed by JDBC'"));
            try (ResultSet rs = st.executeQuery("select 40 + 2")) {
                rs.next();
                out("ordinary", rs.getInt(1));
            }
        }
        // In a transaction (pgjdbc sends BEGIN in the same batch as the statement): CREATE API TOKEN is refused
        // (25001) as PostgreSQL refuses CREATE DATABASE, and the transaction fails; other API TOKEN statements
        // run at once, with a NOTICE, and a rollback does not undo them.
        c.setAutoCommit(false);
        try (Statement st = c.createStatement()) {
            try (ResultSet rs = st.executeQuery("select txid_current() > 0")) {
                rs.next();
                out("tx_ordinary", rs.getBoolean(1));
            }
        }
        try {
            create(c, txName, "tx_refused");
        } catch (SQLException e) {
            out("tx_create_error", e.getSQLState());
        }
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select 1")) {
            out("tx_after_create", "ran");
        } catch (SQLException e) {
            out("tx_after_create_error", e.getSQLState());
        }
        c.rollback();
        try (Statement st = c.createStatement()) {
            st.executeUpdate("ALTER API TOKEN " + name + " SET COMMENT 'in a transaction'");
            for (SQLWarning w = st.getWarnings(); w != null; w = w.getNextWarning()) out("tx_notice", w.getMessage());
        }
        show(c, "tx_show");
        c.rollback();
        c.setAutoCommit(true);
        create(c, txName, "tx");
        show(c, "after_rollback");
        // Metadata through the proxy (DBeaver's first screen).
        DatabaseMetaData md = c.getMetaData();
        out("product", md.getDatabaseProductName());
        try (ResultSet rs = md.getTables(null, "public", metaTable, new String[] {"TABLE"})) {
            while (rs.next()) out("meta_table", rs.getString("TABLE_NAME"));
        }
        try (PreparedStatement ps = c.prepareStatement("DROP API TOKEN " + name)) {
            out("drop_count", ps.executeUpdate());
        }
        try (Statement st = c.createStatement()) {
            st.execute("DROP API TOKEN " + txName);
            out("drop2_update_count", st.getUpdateCount());
        }
        // An API TOKEN error surfaces as an SQLException with its SQLSTATE, and the connection goes on.
        try (Statement st = c.createStatement()) {
            st.execute("DROP API TOKEN " + name + "_missing");
            out("missing_error", "none");
        } catch (SQLException e) {
            out("missing_error", e.getSQLState());
        }
        try (Statement st = c.createStatement(); ResultSet rs = st.executeQuery("select 1")) {
            rs.next();
            out("after_error", rs.getInt(1));
        }
    }

    public static void main(String[] a) throws Exception {
        String mode = a[0], url = a[1];
        Properties p = new Properties();
        p.setProperty("user", a[2]);
        p.setProperty("password", a[3]);
        try (Connection c = DriverManager.getConnection(url, p)) {
            if (mode.equals("login")) {
                try (Statement st = c.createStatement();
                     ResultSet rs = st.executeQuery("select current_user, session_user")) {
                    rs.next();
                    out("current_user", rs.getString(1));
                    out("session_user", rs.getString(2));
                }
            } else {
                sql(c, a[4], a[5], a[6]);
            }
            out("done", true);
        } catch (SQLException e) {
            out("error_sqlstate", e.getSQLState());
            out("error_message", e.getMessage().replace('\n', ' '));
            System.exit(3);
        }
    }
}
